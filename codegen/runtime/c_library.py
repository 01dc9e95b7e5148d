"""The compiled C kernels of ``generated/c_kernels.py``: loading, fast path, dispatch.

:class:`Library` takes the tables the generated bindings emit (C parameters of every
C function, LeNet-5 specializations, the fast path's symbols) and provides what every
binding does the same way: compile or load the library on first use (through
:mod:`codegen.build`, which raises :class:`codegen.build.BuildError` naming the NumPy
fallback when there is no working compiler), load the CPython fast path beside it,
choose the LeNet-5 layer whose specialized C function fits a call's sizes, and call
a C function through ctypes.

Examples
--------
>>> lib = Library("k.c", "k_fast.c", (), {}, {"relu": (("F6", {"N": 84}, None),)})
>>> lib.variant("relu", {"N": 84}), lib.variant("relu", {"N": 3}), lib.variant("tanh", {})
('F6', None, None)
"""

import ctypes
import functools
import logging
import os

import numpy

from codegen import build

#: ctypes type of a C parameter by kind (floats take the call's dtype).
CTYPES = {"int": ctypes.c_int64, "array": ctypes.c_void_p}
#: NumPy float dtype -> (suffix of its C functions, ctypes type of its scalars).
FLOATS = {
    numpy.dtype(numpy.float32): ("f32", ctypes.c_float),
    numpy.dtype(numpy.float64): ("f64", ctypes.c_double),
}


class Library:
    """The C kernels compiled from ``source``, and their fast path built from ``fast_source``.

    Parameters
    ----------
    source, fast_source : path
        ``symconv.c`` and ``symconv_fast.c``.
    fast_symbols : tuple of str
        The C functions the fast path calls, in the order its ``bind`` takes their
        addresses.
    signatures : dict
        C function name without its dtype suffix -> its parameters, ``(name, kind)``
        with kind ``"array"``, ``"int"`` or ``"float"``.
    specializations : dict
        kernel -> ``((layer, fixed sizes and params, table rows or None), ...)``, in the
        order a call tries them.
    extra_flags : tuple of str
        Compiler flags after all others, for both the library and its fast path (e.g.
        ``("-ffp-contract=fast",)``: another library, cached apart, that rounds otherwise).

    Attributes
    ----------
    fast
        The fast-path module: loaded by the first kernel call that reads an attribute
        of it (:meth:`fast_path`).
    """

    def __init__(
        self, source, fast_source, fast_symbols, signatures, specializations, extra_flags=()
    ):
        self.source = source
        self.extra_flags = tuple(extra_flags)
        self.fast_source = fast_source
        self.fast_symbols = fast_symbols
        self.signatures = signatures
        self.specializations = specializations
        self.fast = Unloaded(self)
        self._library = None
        self._functions = {}

    def library(self):
        """The compiled C library (compiled or taken from the cache on first use).

        OpenMP threads sleep rather than spin between kernels (``OMP_WAIT_POLICY``
        passive, unless the environment already chooses): spinning threads steal the
        cores NumPy and the other kernels need between two parallel loops.
        """
        if self._library is None:
            os.environ.setdefault("OMP_WAIT_POLICY", "passive")
            self._library = build.load_library(self.source, self.extra_flags)
        return self._library

    def identity(self) -> dict:
        """The compiled library's file, compiler and flags (:func:`codegen.build.identity`):
        what a training run records so that its rounding can be told apart from another's."""
        return build.identity(self.library(), self.extra_flags)

    def fast_path(self):
        """The fast-path module, its kernels bound to the C library's functions.

        A fast path that cannot be built (no Python headers) is logged and replaced by
        one that declines every call.
        """
        lib = self.library()
        try:
            module = build.load_extension(self.fast_source, "symconv_fast", self.extra_flags)
        except build.BuildError as exc:
            logging.getLogger("symconv.build").warning(
                "no C fast path, checks run in Python: %s", exc
            )
            return Declining()
        addresses = (ctypes.cast(getattr(lib, s), ctypes.c_void_p).value for s in self.fast_symbols)
        module.bind(tuple(addresses))
        return module

    def rebuilt(self, extra_flags):
        """The same kernels, compiled with ``extra_flags`` too (loaded on first use)."""
        return Library(
            self.source,
            self.fast_source,
            self.fast_symbols,
            self.signatures,
            self.specializations,
            (*self.extra_flags, *extra_flags),
        )

    def variant(self, kernel, values, table=None):
        """The LeNet-5 layer whose specialization fits these sizes, or None (generic kernel)."""
        for layer, fixed, rows in self.specializations.get(kernel, ()):
            if any(values[name] != value for name, value in fixed.items()):
                continue
            if table is not None and table.tobytes() != _connections(rows, table.shape):
                continue
            return layer
        return None

    def function(self, kernel, layer, dtype):
        """(C function, its parameters as (name, is_array)) of ``kernel``, cached per
        layer and dtype.

        Looking the symbol up and building its ``argtypes`` costs as much as a small
        kernel itself: it is done once per function, not once per call.
        """
        key = (kernel, layer, dtype)
        found = self._functions.get(key)
        if found is None:
            suffix, cfloat = FLOATS[dtype]
            base = f"symconv_{kernel}_{layer}" if layer else f"symconv_{kernel}"
            fn = getattr(self.library(), f"{base}_{suffix}")
            params = self.signatures[base]
            fn.argtypes = [cfloat if kind == "float" else CTYPES[kind] for _, kind in params]
            fn.restype = None
            found = (fn, tuple((name, kind == "array") for name, kind in params))
            self._functions[key] = found
        return found

    def call(self, kernel, dtype, values, table=None):
        """Call the C function of ``kernel`` on ``values`` (checked arrays, sizes and
        params by name): the specialization of the LeNet-5 layer that fits them
        (:meth:`variant`; ``table`` is the call's connection table), else the generic one."""
        layer = self.variant(kernel, values, table)
        fn, params = self.function(kernel, layer, dtype)
        fn(*[values[name].ctypes.data if is_array else values[name] for name, is_array in params])


@functools.lru_cache(maxsize=64)
def _connections(rows, shape):
    """The bytes of the bool connection table of a specialization's rows (cached).

    Comparing bytes is cheaper than ``numpy.array_equal``; a table that differs in any
    byte runs the generic kernel, which is correct for every table.
    """
    mask = numpy.zeros(shape, dtype=bool)
    if rows is None:
        mask[:] = True
    for k, cs in enumerate(rows or ()):
        mask[k, list(cs)] = True
    return mask.tobytes()


class Declining:
    """A fast path whose every kernel declines (returns None)."""

    def __getattr__(self, kernel):
        return _decline


def _decline(*args):
    return None


class Unloaded:
    """``library.fast`` until the first call, which loads the fast path into its place."""

    def __init__(self, library):
        self.library = library

    def __getattr__(self, kernel):
        if self.library.fast is self:
            self.library.fast = self.library.fast_path()
        return getattr(self.library.fast, kernel)
