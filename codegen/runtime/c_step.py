"""Bindings of the fused LeNet-5 training step (``symconv_lenet5_*``, emitted by
:mod:`codegen.lenet5_step`): forward, MAP losses, backward and the update of a whole
batch in one C call. Every argument is validated before C sees it, with the messages
of :mod:`codegen.runtime.checks`. The training steps and the forward pass first try the
CPython fast path (``symconv_fast.lenet5_*``), which runs the same checks in C and
declines (None) any call it would reject or is unsure of; the checked path then takes it.

The generated bindings build one :class:`Step` from their tables (the trainable arrays
and their shapes, the C parameters of each entry point) and export its methods as
``lenet5_workspace``, ``lenet5_penalties`` (the forward pass alone, in the same lanes),
``lenet5_gradients``, ``lenet5_sdlm_step`` and ``lenet5_sgd_step``.
"""

import ctypes
import operator

import numpy

from codegen.runtime.c_library import CTYPES, FLOATS
from codegen.runtime.checks import Args


class Step:
    """The LeNet-5 step entry points of a :class:`codegen.runtime.c_library.Library`.

    Parameters
    ----------
    library : codegen.runtime.c_library.Library
    params : tuple
        ``(name, shape)`` of every trainable array, in the order of the C pointer arrays.
    entry_points : dict
        entry point (``penalties``, ``gradients``, ``sdlm_step``, ``sgd_step``) -> its C parameters,
        ``(name, kind)`` with kind ``pointers`` (read), ``pointers_out`` (written),
        ``input``, ``output``, ``labels``, ``int`` or ``float``.
    input_shape : tuple of int
        (maps, rows, columns) of one image.
    classes : int
        Number of classes (RBF units).
    centers : nested tuple of float
        The fixed RBF parameter vectors, ``classes`` rows.
    squash : tuple of float
        The constants A and S of the squashing function and j of the MAP criterion.
    """

    def __init__(self, library, params, entry_points, input_shape, classes, centers, squash):
        self.library = library
        self.params = params
        self.entry_points = entry_points
        self.input_shape = input_shape
        self.classes = classes
        self.centers = centers
        self.squash = dict(zip(("A", "S", "j"), squash, strict=True))
        self._names = tuple(name for name, _ in params)
        self._sizes = {}
        self._centers = {}
        self._functions = {}
        # role -> (the arrays of the last call, their C addresses). A training loop passes
        # the same parameter, Hessian, velocity and workspace arrays at every step, so
        # their addresses are looked up once; holding the arrays keeps each address valid
        # (and numpy refuses to resize a referenced array).
        self._addresses = {}

    def on(self, library):
        """These entry points on another build of the kernels (a
        :class:`codegen.runtime.c_library.Library`, e.g. ``library.rebuilt(flags)``)."""
        tables = (self.params, self.entry_points, self.input_shape, self.classes, self.centers)
        return Step(library, *tables, tuple(self.squash.values()))

    def workspace(self, batch, dtype):
        """Scratch for steps on ``batch`` images of ``dtype``: allocate once, pass to every step.

        Its size is ``symconv_lenet5_workspace_size(batch)`` elements (activations and
        gradients of every image, one gradient accumulator per lane).
        """
        a = Args("lenet5_workspace")
        batch = a.integer("batch", batch, 1)
        if numpy.dtype(dtype) not in FLOATS:
            a.fail(TypeError, f"dtype must be float32 or float64, got {numpy.dtype(dtype)}")
        return numpy.empty(self._size(batch), dtype=dtype)

    def penalties(self, params, x, work):
        """The RBF penalties y (B, classes) of the images ``x`` (B, 1, 32, 32): the forward
        pass of the steps, bit for bit, without the loss and the backward pass.

        ``params``: dict of the trainable arrays (only read); ``work`` from
        :meth:`workspace` (B, dtype of x).
        """
        out = self.library.fast.lenet5_penalties(params, x, work)
        return self._forward(params, x, work) if out is None else out

    def _forward(self, params, x, work):
        """:meth:`penalties` through the Python checks and ctypes (the calls the fast path
        declines)."""
        a = Args("lenet5_penalties")
        B, x = self._images(a, x)
        _check_workspace(a, work, B, self._size(B))
        y = numpy.empty((B, self.classes), dtype=a.dtype)
        pointers = self._pointer_arrays(a, "penalties", (params,))
        self._call("penalties", a, pointers | dict(x=x, y=y, work=work, B=B))
        return y

    def gradients(self, params, x, labels, work):
        """(per-image MAP losses E, RBF penalties y, gradients of sum(E) by parameter name).

        ``params``: dict of the trainable arrays; ``x`` (B, 1, 32, 32); ``labels`` int64
        digits; ``work`` from :meth:`workspace` (B, dtype of x).
        """
        a = Args("lenet5_gradients")
        B, x, labels, E, y = self._batch(a, x, labels, work)
        grads = {name: numpy.empty(shape, dtype=a.dtype) for name, shape in self.params}
        pointers = self._pointer_arrays(a, "gradients", (params, grads))
        self._call("gradients", a, pointers | dict(x=x, labels=labels, E=E, y=y, work=work, B=B))
        return E, y, grads

    def sdlm_step(self, params, hess, x, labels, eta, mu, work):
        """One SDLM step in place, params -= eta / (mu + hess) * gradient of sum(E);
        returns (E, y).

        ``hess``: the Gauss-Newton diagonal, a dict like ``params``; see :meth:`gradients`.
        """
        out = self.library.fast.lenet5_sdlm_step(params, hess, x, labels, eta, mu, work)
        if out is not None:
            return out
        scalars = (("eta", eta), ("mu", mu))
        return self._update("sdlm_step", params, hess, x, labels, scalars, work)

    def sgd_step(self, params, velocity, x, labels, rate, momentum, work):
        """One momentum step in place, velocity = momentum velocity - rate gradient;
        params += velocity.

        ``rate`` multiplies the gradient of the *summed* loss (lr / B for the batch mean);
        returns (E, y).
        """
        out = self.library.fast.lenet5_sgd_step(params, velocity, x, labels, rate, momentum, work)
        if out is not None:
            return out
        scalars = (("rate", rate), ("momentum", momentum))
        return self._update("sgd_step", params, velocity, x, labels, scalars, work)

    def _update(self, entry, params, state, x, labels, scalars, work):
        """The in-place step of the C entry point ``entry``; returns (E, y).

        ``state`` is the dict of the optimizer's arrays beside ``params`` (``hess`` or
        ``velocity``); ``scalars`` are (name, value) of its float parameters.
        """
        a = Args(f"lenet5_{entry}")
        B, x, labels, E, y = self._batch(a, x, labels, work)
        values = {name: a.real(name, value) for name, value in scalars}
        values |= self._pointer_arrays(a, entry, (params, state))
        self._call(entry, a, values | dict(x=x, labels=labels, E=E, y=y, work=work, B=B))
        return E, y

    def _size(self, batch):
        """Workspace elements for ``batch`` images (asked of the C library once per batch size)."""
        size = self._sizes.get(batch)
        if size is None:
            fn = self.library.library().symconv_lenet5_workspace_size
            fn.argtypes, fn.restype = [ctypes.c_int64], ctypes.c_int64
            size = self._sizes[batch] = fn(batch)
        return size

    def _function(self, name, dtype):
        """The C entry point ``symconv_lenet5_<name>`` of ``dtype``, its argtypes set once."""
        key = (name, dtype)
        fn = self._functions.get(key)
        if fn is None:
            suffix, cfloat = FLOATS[dtype]
            fn = getattr(self.library.library(), f"symconv_lenet5_{name}_{suffix}")
            kinds = [kind for _, kind in self.entry_points[name]]
            fn.argtypes = [
                cfloat if k == "float" else CTYPES["int" if k == "int" else "array"] for k in kinds
            ]
            fn.restype = None
            self._functions[key] = fn
        return fn

    def _pointer_arrays(self, a, entry, dicts):
        """The pointer-array arguments of ``entry`` by name, one per dict of ``dicts`` in its
        order; the arrays of a "pointers_out" argument are written, so they must be
        writeable."""
        roles = [
            (name, kind) for name, kind in self.entry_points[entry] if kind.startswith("pointers")
        ]
        return {
            name: self._pointers(a, name, arrays, kind == "pointers_out")
            for (name, kind), arrays in zip(roles, dicts, strict=True)
        }

    def _pointers(self, a, name, arrays, writeable):
        """A C array of pointers to the trainable arrays of the dict ``arrays``, each checked."""
        if not isinstance(arrays, dict) or len(arrays) != len(self.params):
            got = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
            names = [n for n, _ in self.params]
            a.fail(ValueError, f"{name} must be a dict of the arrays {names}, got {got}")
        listed = tuple(map(arrays.get, self._names))
        for array, (key, shape) in zip(listed, self.params, strict=True):
            _check_param(a, name, key, array, shape, writeable)
        return self._cached_addresses(
            name, listed, lambda: (ctypes.c_void_p * len(listed))(*[p.ctypes.data for p in listed])
        )

    def _cached_addresses(self, role, arrays, lookup):
        """``lookup()`` (the C addresses of ``arrays``), reused while ``role`` gets the very
        same arrays."""
        found = self._addresses.get(role)
        if (
            found is None
            or len(found[0]) != len(arrays)
            or not all(map(operator.is_, found[0], arrays))
        ):
            found = self._addresses[role] = (arrays, lookup())
        return found[1]

    def _images(self, a, x):
        """Checks the images of a call; returns (B, x as checked: an aligned copy of a
        misaligned array)."""
        x = a.floats("x", x, ("B", "C", "H", "W"))
        if x.shape[1:] != self.input_shape:
            want = ", ".join(map(str, self.input_shape))
            a.fail(ValueError, f"x must have shape (B, {want}), got {x.shape}")
        return a.dims["B"], x

    def _batch(self, a, x, labels, work):
        """Checks the images, labels and workspace of a step; returns (B, x, labels, losses E,
        penalties y): x and labels as checked (aligned copies of misaligned arrays)."""
        B, x = self._images(a, x)
        labels = a.int64s("labels", labels, ("B",))
        a.below("labels", labels, self.classes, "classes")
        _check_workspace(a, work, B, self._size(B))
        E = numpy.empty(B, dtype=a.dtype)
        return B, x, labels, E, numpy.empty((B, self.classes), dtype=a.dtype)

    def _call(self, entry, a, values):
        """Call the entry point ``entry``: ``values`` maps its C parameter names to the checked
        pointer arrays, numpy arrays and sizes; the centers and squashing constants are added."""
        if a.dtype not in self._centers:
            self._centers[a.dtype] = numpy.ascontiguousarray(self.centers, dtype=a.dtype)
        values = values | self.squash | {"centers": self._centers[a.dtype]}
        args = [self._c_value(name, kind, values[name]) for name, kind in self.entry_points[entry]]
        self._function(entry, a.dtype)(*args)

    def _c_value(self, name, kind, value):
        """The C argument of the parameter ``name`` of ``kind`` (a numpy array's address)."""
        if kind not in ("input", "output", "labels"):  # ctypes pointer arrays, sizes, scalars
            return value
        if name in ("centers", "work"):  # the same array at every step
            return self._cached_addresses(name, (value,), lambda: value.ctypes.data)
        return value.ctypes.data


def _check_param(a, name, key, array, shape, writeable):
    """The trainable array ``name[key]`` of a step: an ndarray of the call's dtype and
    ``shape``, C-contiguous and aligned (and writeable when the step updates it)."""
    # A step at batch 1 takes a few hundred microseconds and checks 24 such arrays: the
    # usual case is one test, and the message is built only for an array that fails.
    if type(array) is numpy.ndarray and array.dtype == a.dtype and array.shape == shape:
        flags = array.flags
        if flags.c_contiguous and flags.aligned and (flags.writeable or not writeable):
            return
    what = f"{name}[{key!r}]"
    if not isinstance(array, numpy.ndarray):
        a.fail(TypeError, f"{what} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype != a.dtype:
        a.fail(TypeError, f"{what} has dtype {array.dtype} but {a.dtype_source} has {a.dtype}")
    if array.shape != shape:
        a.fail(ValueError, f"{what} must have shape {shape}, got {array.shape}")
    if not array.flags.c_contiguous or not array.flags.aligned:
        a.fail(ValueError, f"{what} must be C-contiguous and aligned")
    if writeable and not array.flags.writeable:
        a.fail(ValueError, f"{what} is updated in place and must be writeable")


def _check_workspace(a, work, B, size):
    """The workspace of a step on B images: ``size`` elements of the call's dtype."""
    if not isinstance(work, numpy.ndarray) or work.dtype != a.dtype or work.ndim != 1:
        a.fail(TypeError, f"work must be a 1-d {a.dtype} array from lenet5_workspace(B, dtype)")
    if not work.flags.c_contiguous or not work.flags.writeable or work.size < size:
        a.fail(
            ValueError,
            f"work must be writeable, C-contiguous and hold {size} elements for B={B} "
            "(lenet5_workspace)",
        )
    if not work.flags.aligned:
        a.fail(ValueError, "work must be aligned for its dtype (as lenet5_workspace allocates it)")
