"""pj.jit and pj.make_jaxpr: trace once per signature, cache, run on a backend."""
from __future__ import annotations

import functools
import inspect

import numpy as np

from . import core
from .core import Tracer, get_aval
from .staging import dce_closed, inline_calls, trace_to_jaxpr
from .array import Array
from .tree_util import LEAF, tree_flatten, tree_flatten_with_path, tree_unflatten
from ..backends import get_backend, to_buffer


def _arg_names(fun, args, kwargs, static_argnums):
    """'x', "params['w']", ... for each dynamic leaf: used to name traced values in errors."""
    try:
        params = list(inspect.signature(fun).parameters)
    except (TypeError, ValueError):
        params = []
    names = []
    for i, a in enumerate(args):
        if i in static_argnums:
            continue
        base = params[i] if i < len(params) and not params[i].startswith("*") else f"args[{i}]"
        names += [base + p for p, _ in tree_flatten_with_path(a)[0]]
    for k in sorted(kwargs):
        names += [k + p for p, _ in tree_flatten_with_path(kwargs[k])[0]]
    return names


def _split_static(args, static_argnums):
    n = len(args)
    static = tuple(sorted({i % n if i < 0 else i for i in static_argnums if -n <= i < n}))
    dyn = tuple(a for i, a in enumerate(args) if i not in static)
    st = tuple(args[i] for i in static)
    for i, s in zip(static, st):
        try:
            hash(s)
        except TypeError:
            raise TypeError(f"static argument {i} of type {type(s).__name__} is not hashable; "
                            "static arguments must be hashable (use a tuple, not a list)") from None
    return static, dyn, st


def _merge_static(static, dyn, st):
    args, it_d, it_s = [], iter(dyn), iter(st)
    for i in range(len(dyn) + len(st)):
        args.append(next(it_s) if i in static else next(it_d))
    return args


def _float0():
    from ..autodiff.ad_util import float0   # imported late: autodiff is built on this module
    return float0


def trace_function(fun, args, kwargs, static_argnums=(), float0_outs=None):
    """Trace fun at the avals of (args, kwargs): (ClosedJaxpr, out_treedef, in_treedef).

    With a list as `float0_outs`, float0 output leaves (the zero tangents and cotangents of
    integer values, which hold no data) are left out of the jaxpr and recorded there as
    (leaf index, shape), for the caller to put back."""
    static, dyn, st = _split_static(args, static_argnums)
    leaves, in_tree = tree_flatten((dyn, kwargs))
    in_avals = [get_aval(x) for x in leaves]
    names = _arg_names(fun, args, kwargs, static)
    out_tree_box = []

    def flat_fun(*flat):
        d, kw = tree_unflatten(in_tree, flat)
        out = fun(*_merge_static(static, d, st), **kw)
        out_leaves, out_tree = tree_flatten(out)
        out_tree_box.append(out_tree)
        if float0_outs is not None:
            drop = [i for i, x in enumerate(out_leaves)
                    if not isinstance(x, Tracer) and getattr(x, "dtype", None) == _float0()]
            float0_outs.extend((i, out_leaves[i].shape) for i in drop)
            out_leaves = [x for i, x in enumerate(out_leaves) if i not in drop]
        return out_leaves
    closed = trace_to_jaxpr(flat_fun, in_avals, names)
    return closed, out_tree_box[0], in_tree


class _Entry:
    __slots__ = ("closed", "out_tree", "executable", "out_avals", "backend", "float0_outs")

    def wrap(self, bufs):
        be = self.backend
        outs = [Array(a, b, be) for a, b in zip(self.out_avals, bufs)]
        for i, shape in self.float0_outs:   # ascending: each lands at its own leaf index
            outs.insert(i, np.zeros(shape, _float0()))
        return outs[0] if self.out_tree is LEAF else tree_unflatten(self.out_tree, outs)


class Jitted:
    """A function compiled on first call per (input avals, static args) and cached."""

    def __init__(self, fun, static_argnums=(), donate_argnums=(), backend=None):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        # compiled backends reuse donated buffers (compiled.py); the numpy backend ignores them
        self.donate_argnums = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
        self.backend = backend
        self._cache: dict = {}
        self._fast: dict = {}
        self.trace_count = 0

    def _key(self, args, kwargs):
        static, dyn, st = _split_static(args, self.static_argnums)
        leaves, tree = tree_flatten((dyn, kwargs))
        return (tree, tuple(get_aval(x) for x in leaves), st), leaves

    def __call__(self, *args, **kwargs):
        if core.dynamic_trace is not None or len(core.trace_stack) > 1:
            return self.fun(*args, **kwargs)       # inside a transformation: trace through
        if not kwargs and not self.static_argnums and all(type(a) is Array for a in args):
            # fast path: flat Array arguments, the common case of a training step's inner call
            entry = self._fast.get(tuple([a.aval for a in args]))
            if entry is not None and all(a._backend is entry.backend for a in args):
                return entry.wrap(entry.executable([a._buf for a in args]))
        key, leaves = self._key(args, kwargs)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = self._compile(args, kwargs)
            if not kwargs and not self.static_argnums and all(type(a) is Array for a in args):
                self._fast[key[1]] = entry
        be = entry.backend
        bufs = [to_buffer(be, x, a) for x, a in zip(leaves, key[1])]
        return entry.wrap(entry.executable(bufs))

    def _compile(self, args, kwargs):
        self.trace_count += 1
        float0_outs = []
        closed, out_tree, _ = trace_function(self.fun, args, kwargs, self.static_argnums,
                                             float0_outs)
        closed = dce_closed(inline_calls(closed))
        entry = _Entry()
        entry.closed, entry.out_tree = closed, out_tree
        entry.float0_outs = tuple(float0_outs)   # returned as float0 zeros, as eager does
        entry.out_avals = closed.out_avals
        entry.backend = get_backend(self.backend)
        donated = _donated_leaves(args, self.static_argnums, self.donate_argnums)
        entry.executable = (entry.backend.compile(closed, donated=donated)
                            if donated and getattr(entry.backend, "supports_donation", False)
                            else entry.backend.compile(closed))
        return entry

    def lower(self, *args, **kwargs):
        """The traced, simplified program for these arguments (its jaxpr and backend)."""
        key, _ = self._key(args, kwargs)
        entry = self._cache.get(key) or self._cache.setdefault(key, self._compile(args, kwargs))
        return entry

    def _cache_size(self):
        return len(self._cache)

    def __get__(self, obj, objtype=None):
        return self if obj is None else functools.partial(self, obj)


def jit(fun=None, *, static_argnums=(), donate_argnums=(), backend=None):
    if fun is None:
        return lambda f: Jitted(f, static_argnums, donate_argnums, backend)
    return Jitted(fun, static_argnums, donate_argnums, backend)


def make_jaxpr(fun, static_argnums=()):
    """`make_jaxpr(f)(*args)` -> the ClosedJaxpr of f at these arguments (prints as text)."""
    static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        return trace_function(fun, args, kwargs, static_argnums)[0]
    return wrapped


def _donated_leaves(args, static_argnums, donate_argnums):
    """Flat input positions (leaves of the dynamic positional args) that are donated."""
    if not donate_argnums:
        return ()
    n = len(args)
    static = _split_static(args, static_argnums)[0]
    donate = {i % n for i in donate_argnums if -n <= i < n} - set(static)
    out, k = [], 0
    for i, a in enumerate(args):
        if i in static:
            continue
        m = len(tree_flatten(a)[0])
        if i in donate:
            out += range(k, k + m)
        k += m
    return tuple(out)
