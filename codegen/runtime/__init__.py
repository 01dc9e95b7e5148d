"""The hand-written runtime that the generated kernel modules import.

:mod:`codegen.runtime.checks` validates the arguments of every kernel call (both
backends); :mod:`codegen.runtime.c_library` loads the compiled C kernels and their
CPython fast path and dispatches a call to the generic or a LeNet-5 layer's C function;
:mod:`codegen.runtime.c_step` binds the fused LeNet-5 training step. The generated
modules hold only what varies per kernel (signatures, check calls, tables of C
parameters and specializations) and pass it to these modules.

Like :mod:`codegen.build`, these modules import neither SymPy, Jinja nor anything of
``derive/``: the LeNet-5 runtime loads them (a test checks it in a fresh interpreter).
"""
