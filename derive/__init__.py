"""symconv's derivations: the lecture's mathematics as machine-checked SymPy.

``derive`` imports nothing else of the project. See :mod:`derive.core` for the
``Derivation``/``Step`` model and the registry; ``python -m derive list`` shows
every derivation.
"""
