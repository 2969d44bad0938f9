"""The user-facing transformations: jvp, linearize, vjp, grad, value_and_grad, jacfwd,
jacrev, hessian. Reverse mode = linearize (JVP traced to a jaxpr, then partially
evaluated) + transpose of the linear part."""
from __future__ import annotations

import functools

import numpy as np

from .. import lax
from ..tracer.core import get_aval
from ..tracer.staging import eval_jaxpr, trace_to_jaxpr
from ..tracer.tree_util import tree_flatten, tree_map, tree_unflatten
from .ad_util import Zero, float0, float0_zeros, instantiate, is_differentiable
from .batching import vmap
from .jvp import closure_convert, jvp_flat
from .partial_eval import partial_eval_jaxpr
from .transpose import UndefPrimal, backward_pass


# ---------------------------------------------------------------- forward mode
def jvp(fun, primals, tangents, has_aux=False):
    """(fun(*primals), the directional derivative along tangents), pytrees in and out."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp expects primals and tangents as tuples of arguments, got "
                        f"{type(primals).__name__} and {type(tangents).__name__}")
    p_leaves, p_tree = tree_flatten(tuple(primals))
    t_leaves, t_tree = tree_flatten(tuple(tangents))
    if p_tree != t_tree:
        raise TypeError(f"jvp: primals {p_tree} and tangents {t_tree} differ in structure")
    tangents_in = [_check_tangent(p, t, i) for i, (p, t) in enumerate(zip(p_leaves, t_leaves))]
    out_tree_box = []

    def flat_fun(*xs):
        out = fun(*tree_unflatten(p_tree, list(xs)))
        out, aux = _split_aux(out, has_aux, "jvp")
        leaves, tree = tree_flatten(out)
        out_tree_box.append((tree, aux))
        return leaves
    p_out, t_out = jvp_flat(flat_fun, p_leaves, tangents_in)
    tree, aux = out_tree_box[0]
    t_out = [_user_tangent(t) for t in t_out]
    res = tree_unflatten(tree, p_out), tree_unflatten(tree, t_out)
    return res + (aux,) if has_aux else res


def _check_tangent(p, t, i):
    pa = get_aval(p)
    if not is_differentiable(pa):
        return Zero(pa)
    ta = get_aval(t)
    if ta.shape != pa.shape or ta.dtype != pa.dtype:
        raise TypeError(f"jvp: tangent {i} has type {ta.str_short()} but its primal is "
                        f"{pa.strip_weak_type().str_short()}; they must match")
    return t


def _user_tangent(t):
    if isinstance(t, Zero):
        return float0_zeros(t.aval) if not is_differentiable(t.aval) else instantiate(t)
    return t


def _split_aux(out, has_aux, who):
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{who} with has_aux=True needs the function to return (output, aux)")
    return out[0], out[1]


# ---------------------------------------------------------------- linearize
class _Linearized:
    """The known outputs of a function's JVP, its residuals, and the linear tangent jaxpr."""

    def __init__(self, flat_fun, primals):
        in_avals = self.in_avals = [get_aval(p) for p in primals]
        self.diff = [is_differentiable(a) for a in in_avals]
        self.t_avals = [a.strip_weak_type() for a, d in zip(in_avals, self.diff) if d]
        n, n_out = len(primals), []

        def jvp_fun(*args):
            ts = iter(args[n:])
            tangents = [next(ts) if d else Zero(a.strip_weak_type())
                        for a, d in zip(in_avals, self.diff)]
            p_out, t_out = jvp_flat(flat_fun, args[:n], tangents)
            n_out.append(len(p_out))
            return list(p_out) + [instantiate(t) for t in t_out]
        jp, consts = closure_convert(trace_to_jaxpr(jvp_fun, in_avals + self.t_avals))
        n_o = n_out[0]
        in_uk = [False] * (len(consts) + n) + [True] * len(self.t_avals)
        known, self.linear, out_uk, _ = partial_eval_jaxpr(jp, in_uk, [False] * n_o + [True] * n_o)
        assert not any(out_uk[:n_o]), "a primal output depends on a tangent"
        outs = eval_jaxpr(known, [], list(consts) + list(primals))
        self.primals_out, self.residuals = outs[:n_o], outs[n_o:]
        self.out_avals = [get_aval(o) for o in self.primals_out]

    def jvp(self, tangents):
        return eval_jaxpr(self.linear, [], list(self.residuals) + list(tangents))

    def vjp(self, cts):
        """Cotangents of every flat input (float0 zeros for integer inputs)."""
        cts = [Zero(a.strip_weak_type()) if not is_differentiable(a) or ct is None else ct
               for ct, a in zip(cts, self.out_avals)]
        args = list(self.residuals) + [UndefPrimal(a) for a in self.t_avals]
        got = backward_pass(self.linear, args, cts)[len(self.residuals):]
        it = iter(got)
        return [instantiate(next(it)) if d else float0_zeros(a)
                for d, a in zip(self.diff, self.in_avals)]


def linearize(fun, *primals):
    """(fun(*primals), f_jvp) where f_jvp(*tangents) evaluates the linearized function."""
    p_leaves, p_tree = tree_flatten(primals)
    out_tree = []
    lin = _Linearized(_flat(fun, p_tree, out_tree), p_leaves)

    def f_jvp(*tangents):
        t_leaves, t_tree = tree_flatten(tangents)
        if t_tree != p_tree:
            raise TypeError(f"linearize: tangents {t_tree} do not match primals {p_tree}")
        ts = [t for t, d in zip(t_leaves, lin.diff) if d]
        return tree_unflatten(out_tree[0], lin.jvp(ts))
    return tree_unflatten(out_tree[0], lin.primals_out), f_jvp


def _flat(fun, in_tree, out_tree_box, has_aux=False, aux_box=None):
    def flat_fun(*xs):
        out = fun(*tree_unflatten(in_tree, list(xs)))
        out, aux = _split_aux(out, has_aux, "vjp/grad")
        leaves, tree = tree_flatten(out)
        out_tree_box.append(tree)
        if not has_aux:
            return leaves
        # aux leaves leave as extra (undifferentiated) outputs, so no tracer escapes
        aux_leaves, aux_tree = tree_flatten(aux)
        aux_box.append((aux_tree, len(aux_leaves)))
        return leaves + aux_leaves
    return flat_fun


def vjp(fun, *primals, has_aux=False):
    """(fun(*primals), f_vjp[, aux]) where f_vjp(ct) returns a cotangent per argument."""
    p_leaves, p_tree = tree_flatten(primals)
    out_tree, aux = [], []
    lin = _Linearized(_flat(fun, p_tree, out_tree, has_aux, aux), p_leaves)
    n_aux = aux[0][1] if has_aux else 0
    n_out = len(lin.primals_out) - n_aux
    out_avals = lin.out_avals[:n_out]

    def f_vjp(ct):
        ct_leaves, ct_tree = tree_flatten(ct)
        if ct_tree != out_tree[0]:
            raise TypeError(f"vjp: cotangent structure {ct_tree} does not match the output "
                            f"structure {out_tree[0]}")
        for i, (c, a) in enumerate(zip(ct_leaves, out_avals)):
            if not is_differentiable(a):
                continue   # an integer output's cotangent (float0 zeros, or anything) is unused
            ca = get_aval(c)
            if ca.shape != a.shape:
                raise TypeError(f"vjp: cotangent {i} has shape {ca.shape} but the output has "
                                f"shape {a.shape}")
        cts = [lax.convert_element_type(c, a.dtype) if is_differentiable(a) else None
               for c, a in zip(ct_leaves, out_avals)]
        return tree_unflatten(p_tree, lin.vjp(cts + [None] * n_aux))
    out = tree_unflatten(out_tree[0], lin.primals_out[:n_out])
    if not has_aux:
        return out, f_vjp
    return out, f_vjp, tree_unflatten(aux[0][0], lin.primals_out[n_out:])


# ---------------------------------------------------------------- grad
def value_and_grad(fun, argnums=0, has_aux=False):
    """fun's value and its gradient with respect to the arguments `argnums` (int or tuple)."""
    @functools.wraps(fun)
    def vg(*args, **kwargs):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        for a in nums:
            if not -len(args) <= a < len(args):
                raise ValueError(f"argnums {argnums} out of range for {len(args)} positional "
                                 "arguments")
        nums = tuple(a % len(args) for a in nums)

        def f(*diff):
            full = list(args)
            for i, d in zip(nums, diff):
                full[i] = d
            return fun(*full, **kwargs)
        res = vjp(f, *[args[i] for i in nums], has_aux=has_aux)
        out, f_vjp = res[0], res[1]
        oa = get_aval(out) if not isinstance(out, (tuple, list, dict)) else None
        if oa is None or oa.shape != () or not is_differentiable(oa):
            what = oa.str_short() if oa is not None else type(out).__name__
            raise TypeError(f"grad requires a function returning a float scalar, got {what}; "
                            "use vjp or jacrev for other outputs")
        g = f_vjp(lax.full((), 1, oa.dtype))
        g = g[0] if isinstance(argnums, int) else tuple(g)
        return ((out, res[2]), g) if has_aux else (out, g)
    return vg


def grad(fun, argnums=0, has_aux=False):
    """The gradient of a float-scalar function with respect to argument(s) `argnums`."""
    vg = value_and_grad(fun, argnums, has_aux)

    @functools.wraps(fun)
    def g(*args, **kwargs):
        (out, aux), gr = vg(*args, **kwargs) if has_aux else ((None, None), vg(*args, **kwargs)[1])
        return (gr, aux) if has_aux else gr
    return g


# ---------------------------------------------------------------- Jacobians
def _std_basis(leaves):
    """Rows of the identity over the concatenated flat leaves, split back per leaf."""
    sizes = [int(np.prod(get_aval(x).shape)) for x in leaves]
    n = sum(sizes)
    eye = np.eye(n, dtype=np.float64)
    out, start = [], 0
    for x, s in zip(leaves, sizes):
        a = get_aval(x)
        out.append(eye[:, start:start + s].reshape((n,) + a.shape).astype(a.dtype))
        start += s
    return out, n


def jacfwd(fun, argnums=0, has_aux=False):
    """Jacobian by forward mode: one jvp per input element, batched with vmap."""
    def jac(*args):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        x = tuple(args[i] for i in nums)
        leaves, tree = tree_flatten(x)
        basis, n = _std_basis(leaves)

        def f(*xs):
            full = list(args)
            for i, v in zip(nums, xs):
                full[i] = v
            return fun(*full)

        def push(*t_leaves):
            return jvp(f, x, tree_unflatten(tree, list(t_leaves)), has_aux=has_aux)
        res = vmap(push, in_axes=0, out_axes=0)(*basis)
        out_t = res[1]
        # each output leaf has shape (n, *out); split n over the input leaves
        jac = tree_map(lambda o: _per_arg(tree_unflatten(tree, _split_in(o, leaves)), argnums),
                       out_t)
        return (jac, tree_map(lambda a: a[0], res[2])) if has_aux else jac
    return jac


def jacrev(fun, argnums=0, has_aux=False):
    """Jacobian by reverse mode: one vjp per output element, batched with vmap."""
    def jac(*args):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)

        def f(*xs):
            full = list(args)
            for i, v in zip(nums, xs):
                full[i] = v
            return fun(*full)
        res = vjp(f, *[args[i] for i in nums], has_aux=has_aux)
        out, f_vjp = res[0], res[1]
        o_leaves, o_tree = tree_flatten(out)
        basis, m = _std_basis(o_leaves)
        cts = vmap(lambda *b: f_vjp(tree_unflatten(o_tree, list(b))))(*basis)
        # cts: per input, leaves of shape (m, *in); regroup per output leaf
        per_out = []
        sizes = [int(np.prod(get_aval(o).shape)) for o in o_leaves]
        start = 0
        for o, s in zip(o_leaves, sizes):
            oa = get_aval(o)
            per_out.append(tree_map(lambda c: lax.reshape(
                lax.slice_in_dim(c, start, start + s, axis=0), oa.shape + get_aval(c).shape[1:]), cts))
            start += s
        j = tree_unflatten(o_tree, [_per_arg(p, argnums) for p in per_out])
        return (j, res[2]) if has_aux else j
    return jac


def _per_arg(args_tuple, argnums):
    return args_tuple[0] if isinstance(argnums, int) else args_tuple


def _split_in(o, in_leaves):
    """(n, *out) -> per input leaf: (*out, *in)."""
    oa = get_aval(o)
    outs, start = [], 0
    for x in in_leaves:
        xa = get_aval(x)
        s = int(np.prod(xa.shape))
        part = lax.slice_in_dim(o, start, start + s, axis=0)           # (s, *out)
        part = lax.reshape(part, xa.shape + oa.shape[1:])             # (*in, *out)
        nin = xa.ndim
        perm = tuple(range(nin, nin + oa.ndim - 1)) + tuple(range(nin))
        outs.append(lax.transpose(part, perm))                        # (*out, *in)
        start += s
    return outs


def hessian(fun, argnums=0):
    """Second derivatives: jacfwd of jacrev."""
    return jacfwd(jacrev(fun, argnums), argnums)


__all__ = ["jvp", "linearize", "vjp", "grad", "value_and_grad", "jacfwd", "jacrev", "hessian",
           "float0"]
