"""Passes over the loop IR of :mod:`codegen.ir`, one module each.

Each pass is a pure function from IR to IR; its docstring says what it changes and
on which IR it applies. The order in which they run is the schedule of
:mod:`codegen.lower_c`.
"""
