"""symconv's derivations: the lecture's mathematics as machine-checked SymPy.

``derive`` imports nothing else of the project. See :mod:`derive.core` for the
``Derivation``/``Step`` model and the registry; ``python -m derive list`` shows
every derivation. In a notebook, :func:`show` displays one as rendered mathematics.
"""


def show(id: str):
    """The derivation ``id``, built; a notebook displays it as rendered mathematics
    (its ``_repr_markdown_`` / ``_repr_latex_``), a terminal can ``print(d)`` its text.

    >>> from derive import show
    >>> d = show("conv.discrete_1d")
    >>> d.id, d._repr_latex_().startswith("$$")
    ('conv.discrete_1d', True)
    >>> d._repr_markdown_().splitlines()[0]
    '<a id="conv.discrete_1d"></a>'
    """
    from derive import core  # imported on use: `import derive` stays instant

    return core.get(id)
