"""Operators and methods shared by pj.Array and tracers; each defers to polyjit.numpy."""
import importlib

_pnp = None


def pnp():
    global _pnp
    if _pnp is None:
        _pnp = importlib.import_module("polyjit.numpy")
    return _pnp


def _binop(name, reflected=False):
    if reflected:
        return lambda self, other: getattr(pnp(), name)(other, self)
    return lambda self, other: getattr(pnp(), name)(self, other)


def _method(name):
    def method(self, *args, **kwargs):
        return getattr(pnp(), name)(self, *args, **kwargs)
    method.__name__ = name
    return method


class ArrayOps:
    __slots__ = ()

    __add__, __radd__ = _binop("add"), _binop("add", True)
    __sub__, __rsub__ = _binop("subtract"), _binop("subtract", True)
    __mul__, __rmul__ = _binop("multiply"), _binop("multiply", True)
    __truediv__, __rtruediv__ = _binop("true_divide"), _binop("true_divide", True)
    __floordiv__, __rfloordiv__ = _binop("floor_divide"), _binop("floor_divide", True)
    __mod__, __rmod__ = _binop("remainder"), _binop("remainder", True)
    __pow__, __rpow__ = _binop("power"), _binop("power", True)
    __matmul__, __rmatmul__ = _binop("matmul"), _binop("matmul", True)
    __and__, __rand__ = _binop("bitwise_and"), _binop("bitwise_and", True)
    __or__, __ror__ = _binop("bitwise_or"), _binop("bitwise_or", True)
    __xor__, __rxor__ = _binop("bitwise_xor"), _binop("bitwise_xor", True)
    __lshift__, __rlshift__ = _binop("left_shift"), _binop("left_shift", True)
    __rshift__, __rrshift__ = _binop("right_shift"), _binop("right_shift", True)
    __lt__, __le__ = _binop("less"), _binop("less_equal")
    __gt__, __ge__ = _binop("greater"), _binop("greater_equal")
    __eq__, __ne__ = _binop("equal"), _binop("not_equal")
    __neg__ = _method("negative")
    __pos__ = _method("positive")
    __abs__ = _method("abs")
    __invert__ = _method("invert")

    def __divmod__(self, other):
        return pnp().divmod(self, other)

    def __getitem__(self, idx):
        return pnp()._indexing.getitem(self, idx)

    def __setitem__(self, idx, value):
        raise TypeError("polyjit arrays are immutable; use x = x.at[idx].set(value)")

    @property
    def at(self):
        return pnp()._indexing.IndexUpdateHelper(self)

    @property
    def T(self):
        return pnp().transpose(self)

    @property
    def mT(self):
        return pnp().swapaxes(self, -1, -2)

    def astype(self, dtype):
        return pnp().asarray(self, dtype=dtype)

    def reshape(self, *shape, order="C"):
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        return pnp().reshape(self, shape, order=order)

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else (axes or None)
        return pnp().transpose(self, axes)

    def __array_namespace__(self, api_version=None):
        return pnp()

    for _n in ["sum", "mean", "max", "min", "prod", "argmax", "argmin", "std", "var", "any",
               "all", "cumsum", "cumprod", "clip", "dot", "round", "swapaxes", "take", "sort",
               "argsort", "repeat", "flatten", "ravel", "squeeze", "nonzero", "conj", "copy",
               "trace", "diagonal", "ptp"]:
        locals()[_n] = _method(_n)
    del _n
