"""symconv's code generator: kernel specs -> NumPy and C source in generated/.

Import nothing heavy here: :mod:`codegen.build` (the C loader) is used by the
runtime, which must not import SymPy.
"""
