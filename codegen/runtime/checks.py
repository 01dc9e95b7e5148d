"""Argument checks shared by the generated NumPy and C backends.

Every kernel validates each argument before any computation: TypeError for a
wrong type or dtype, ValueError for a wrong rank, shape, layout or value; each
message starts with the kernel name and names the argument.

Every size (bound by an array, given as a parameter or derived by a formula) and
every int parameter must lie below ``MAX_SIZE`` = 2**31: the C kernels take them as
``int64_t`` and every size formula is at most quadratic in them, so no index
arithmetic in C can overflow (the C fast path declines the same calls).  Input
arrays that are not aligned for their dtype are copied before C reads them.

Examples
--------
>>> import numpy
>>> a = Args("relu_forward")
>>> a.floats("x", numpy.zeros((2, 3)), ("N", "M")).shape, a.dims, a.dtype
((2, 3), {'N': 2, 'M': 3}, dtype('float64'))
>>> a.integer("stride", 0, 1)
Traceback (most recent call last):
...
ValueError: relu_forward: stride must be >= 1, got 0
"""

import functools
import numbers

import numpy

FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
#: A float32 call converts its float parameters to float32; beyond this they become inf.
FLOAT32_MAX = float(numpy.finfo(numpy.float32).max)
#: Exclusive upper bound of every size and int parameter (see the module docstring).
MAX_SIZE = 2**31


@functools.lru_cache(maxsize=64)
def all_connected(shape):
    """A read-only all-True connection table of ``shape`` (cached: calls without a table).

    >>> all_connected((2, 3)).all(), all_connected((2, 3)).flags.writeable
    (np.True_, False)
    """
    mask = numpy.ones(shape, dtype=bool)
    mask.flags.writeable = False
    return mask


class Args:
    """Checks the arguments of one call and binds the size names they imply."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.dims = {}
        self.source = {}
        self.shapes = {}
        self.params = {}
        self.dtype = None
        self.dtype_source = None

    def fail(self, exc, message):
        raise exc(f"{self.kernel}: {message}")

    def _ndarray(self, name, a, rank_names):
        if not isinstance(a, numpy.ndarray):
            self.fail(TypeError, f"{name} must be a numpy.ndarray, got {type(a).__name__}")
        if rank_names is not None and a.ndim != len(rank_names):
            want = ", ".join(rank_names)
            self.fail(
                ValueError, f"{name} must have rank {len(rank_names)} ({want}), got shape {a.shape}"
            )
        if not a.flags.c_contiguous or min(a.strides, default=0) < 0:
            self.fail(ValueError, f"{name} must be C-contiguous with positive strides")
        if a.size == 0:
            self.fail(ValueError, f"{name} must not be empty, got shape {a.shape}")
        # A misaligned view (e.g. of a byte buffer at an odd offset) is undefined
        # behaviour for C's typed loads; a copy is aligned and has the same values.
        return a if a.flags.aligned else a.copy()

    def _bind(self, name, shape, dims):
        for axis, (size, dim) in enumerate(zip(shape, dims, strict=True)):
            if size >= MAX_SIZE:
                self.fail(ValueError, f"{name} size {dim}={size} (axis {axis}) must be < 2**31")
            if dim in self.dims and self.dims[dim] != size:
                want = ", ".join(dims)
                self.fail(
                    ValueError,
                    f"{name} must have shape ({want}) with {dim}={self.dims[dim]} matching "
                    f"{self.source[dim]}, got {tuple(shape)} (axis {axis})",
                )
            self.dims.setdefault(dim, int(size))
            self.source.setdefault(dim, name)

    def floats(self, name, a, dims, flat=False):
        """A float32/float64 array sharing the call's dtype; flat arrays are raveled."""
        a = self._ndarray(name, a, None if flat else dims)
        if a.dtype not in FLOAT_DTYPES:
            self.fail(TypeError, f"{name} must have dtype float32 or float64, got {a.dtype}")
        if self.dtype is None:
            self.dtype, self.dtype_source = a.dtype, name
        elif a.dtype != self.dtype:
            self.fail(
                TypeError,
                f"{name} has dtype {a.dtype} but {self.dtype_source} has {self.dtype}; "
                "all float arguments of one call must share one dtype",
            )
        if flat:
            if dims[0] in self.shapes and self.shapes[dims[0]] != a.shape:
                first = self.shapes[dims[0]]
                self.fail(
                    ValueError,
                    f"{name} must have the shape {first} of {self.source[dims[0]]}, got {a.shape}",
                )
            self.shapes.setdefault(dims[0], a.shape)
            a = a.reshape(-1)
        self._bind(name, a.shape, dims)
        return a

    def int64s(self, name, a, dims):
        """An int64 array (labels, argmax)."""
        a = self._ndarray(name, a, dims)
        if a.dtype != numpy.int64:
            self.fail(TypeError, f"{name} must have dtype int64, got {a.dtype}")
        self._bind(name, a.shape, dims)
        return a

    def below(self, name, a, bound, what):
        """Every value of ``a`` in [0, bound)."""
        if a.min() < 0 or a.max() >= bound:
            self.fail(
                ValueError,
                f"{name} values must lie in [0, {what}={bound}), got [{a.min()}, {a.max()}]",
            )

    def mask(self, name, a, dims):
        """A connection table (uint8 or bool, 1 = connected) as bool; None = all connected.

        The all-connected table of a shape is built once and shared read-only.
        """
        if a is None:
            return all_connected(tuple(self.dims[d] for d in dims))
        self._ndarray(name, a, dims)
        if a.dtype not in (numpy.dtype(numpy.uint8), numpy.dtype(bool)):
            self.fail(TypeError, f"{name} must have dtype uint8 or bool, got {a.dtype}")
        if a.dtype == numpy.uint8 and a.max() > 1:
            self.fail(ValueError, f"{name} entries must be 0 or 1, got {a.max()}")
        want = tuple(self.dims[d] for d in dims)
        if a.shape != want:
            shape = ", ".join(f"{d}={self.dims[d]}" for d in dims)
            self.fail(ValueError, f"{name} must have shape ({shape}), got {a.shape}")
        return numpy.ascontiguousarray(a, dtype=bool)

    def integer(self, name, value, minimum):
        """An int parameter in [minimum, MAX_SIZE) (bool is rejected)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            self.fail(TypeError, f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            self.fail(ValueError, f"{name} must be >= {minimum}, got {value}")
        if value >= MAX_SIZE:
            self.fail(ValueError, f"{name} must be < 2**31, got {value}")
        self.params[name] = int(value)
        return int(value)

    def real(self, name, value):
        """A float parameter, finite also in the call's dtype (checked after its arrays)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(TypeError, f"{name} must be a real number, got {type(value).__name__}")
        if not numpy.isfinite(value):
            self.fail(ValueError, f"{name} must be finite, got {value}")
        if self.dtype == numpy.float32 and abs(value) > FLOAT32_MAX:
            self.fail(ValueError, f"{name} must be within float32's range here, got {value}")
        self.params[name] = float(value)
        # A scalar of the call's dtype: NumPy arithmetic on it (A**2 of a huge A) gives inf as
        # the C kernel does, where Python float arithmetic raises OverflowError.
        return float(value) if self.dtype is None else self.dtype.type(value)

    def sizes(self, name, value, dims):
        """A tuple of positive ints naming sizes (input_hw, kernel_hw)."""
        if not isinstance(value, tuple | list) or len(value) != len(dims):
            self.fail(
                TypeError,
                f"{name} must be a tuple of {len(dims)} ints ({', '.join(dims)}), got {value!r}",
            )
        sizes = tuple(self.integer(f"{name}[{i}]", v, 1) for i, v in enumerate(value))
        self._bind(name, sizes, dims)
        return sizes

    def _where(self, names):
        """``H=7 from input_hw, stride=2``: the values a formula used and their arguments."""
        parts = []
        for name in names:
            if name in self.dims:
                parts.append(f"{name}={self.dims[name]} from {self.source[name]}")
            else:
                parts.append(f"{name}={self.params[name]}")
        return ", ".join(parts)

    def derive(self, dim, value, formula, uses=()):
        """A size computed from others: in [1, MAX_SIZE), agreeing with an array that carries it."""
        if value < 1:
            self.fail(
                ValueError,
                f"{dim} = {formula} = {value} must be >= 1 with {self._where(uses)} "
                "(input too small?)",
            )
        if value >= MAX_SIZE:
            self.fail(
                ValueError, f"{dim} = {formula} = {value} must be < 2**31 with {self._where(uses)}"
            )
        if dim in self.dims and self.dims[dim] != value:
            self.fail(
                ValueError,
                f"{dim}={self.dims[dim]} from {self.source[dim]} does not match "
                f"{dim} = {formula} = {value} with {self._where(uses)}",
            )
        self.dims[dim] = int(value)
        self.source.setdefault(dim, formula)
        return int(value)

    def require(self, ok, message, uses=()):
        """A constraint between sizes: fails with ``message`` and the values it read."""
        if not ok:
            self.fail(ValueError, f"{message} ({self._where(uses)})")

    def shape_of(self, dim):
        """The original shape of the flat arrays sized ``dim``."""
        return self.shapes[dim]
