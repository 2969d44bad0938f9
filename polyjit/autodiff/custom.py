"""User-defined derivatives (custom_jvp, custom_vjp), stop_gradient and checkpoint.

custom_jvp / custom_vjp act when a JVP trace is the innermost transformation of their
arguments; elsewhere they call the function. A custom_vjp's tangent is a `custom_lin`
equation, linear in the tangents, whose transpose calls the user's bwd. `checkpoint`
binds `remat`, a call primitive whose partial evaluation keeps only its inputs as
residuals, so its forward values are recomputed during the backward pass.
"""
from __future__ import annotations

import functools

from ..tracer import core
from ..tracer.core import Primitive, ShapedArray, abstract_eval_rules, bind, full_raise, get_aval
from ..tracer.staging import dce_jaxpr, eval_jaxpr, trace_to_jaxpr
from ..tracer.tree_util import tree_flatten, tree_map, tree_unflatten
from .. import lax
from ..tracer import primitives as P
from .ad_util import Zero, instantiate, is_differentiable
from .jvp import JVPTrace, JVPTracer, closure_convert, jvp_jaxpr, jvp_rules
from .partial_eval import partial_eval_jaxpr, partial_eval_rules
from .transpose import backward_pass, is_undef, transpose_rules
from .batching import batching_rules
from ..tracer.core import Eqn, Jaxpr


def stop_gradient(x):
    """x, with a zero derivative (applies to every float leaf of a pytree)."""
    def sg(leaf):
        return bind(P.UNARY["stop_gradient"], leaf) if is_differentiable(get_aval(leaf)) else leaf
    return tree_map(sg, x)


def _jvp_trace_of(leaves):
    trace = core.find_top_trace(leaves)
    return trace if isinstance(trace, JVPTrace) else None


# ---------------------------------------------------------------- custom_jvp
class custom_jvp:
    """`f = custom_jvp(f)`; `@f.defjvp def f_jvp(primals, tangents): return out, t_out`."""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun, self.jvp = fun, None
        self.nondiff_argnums = tuple(nondiff_argnums)

    def defjvp(self, jvp):
        self.jvp = jvp
        return jvp

    def defjvps(self, *per_arg):
        """One rule per argument, rule(g, ans, *args) -> tangent contribution (or None)."""
        def jvp(primals, tangents):
            ans = self.fun(*primals)
            out = None
            for r, t in zip(per_arg, tangents):
                if r is None:
                    continue
                c = r(t, ans, *primals)
                out = c if out is None else tree_map(lax.add, out, c)
            return ans, out if out is not None else tree_map(lambda a: a * 0, ans)
        self.jvp = jvp

    def __call__(self, *args):
        if self.jvp is None:
            raise TypeError(f"custom_jvp function {self.__name__} has no rule: call .defjvp first")
        nd = self.nondiff_argnums
        diff_args = [a for i, a in enumerate(args) if i not in nd]
        leaves, tree = tree_flatten(diff_args)
        trace = _jvp_trace_of(leaves)
        if trace is None:
            return self.fun(*args)
        tracers = [full_raise(trace, x) for x in leaves]
        primals = tree_unflatten(tree, [t.primal for t in tracers])
        tangents = tree_unflatten(tree, [instantiate(t.tangent) for t in tracers])
        full = _merge(args, nd, primals)
        rule = functools.partial(self.jvp, *[args[i] for i in nd]) if nd else self.jvp
        out, t_out = rule(tuple(full[i] for i in range(len(args)) if i not in nd), tuple(tangents))
        p_leaves, out_tree = tree_flatten(out)
        t_leaves, t_tree = tree_flatten(t_out)
        if t_tree != out_tree:
            raise TypeError(f"custom_jvp rule of {self.__name__} returned tangents structured "
                            f"{t_tree}, but the primal output is {out_tree}")
        return tree_unflatten(out_tree, [JVPTracer(trace, p, t) for p, t in zip(p_leaves, t_leaves)])


def _merge(args, nd, diff):
    it = iter(diff)
    return [a if i in nd else next(it) for i, a in enumerate(args)]


# ---------------------------------------------------------------- custom_vjp
custom_lin_p = Primitive("custom_lin", multiple_results=True)
abstract_eval_rules[custom_lin_p] = lambda *avals, out_avals, **_: list(out_avals)


def _custom_lin_eval(*args, **params):
    raise TypeError("forward-mode differentiation (jvp, jacfwd) of a custom_vjp function is "
                    "not defined: it only has a reverse-mode rule. Use grad/vjp/jacrev, or "
                    "custom_jvp.")


core.call_impls[custom_lin_p] = _custom_lin_eval


def _custom_lin_jvp(primals, tangents, **params):
    _custom_lin_eval()


def _custom_lin_transpose(cts, *args, num_res, bwd, res_tree, in_avals, out_tree, out_avals):
    res = tree_unflatten(res_tree, list(args[:num_res]))
    cts_out = tree_unflatten(out_tree, [instantiate(c) for c in cts])
    cts_in, in_tree = tree_flatten(bwd(res, cts_out), is_leaf=lambda x: x is None)
    if len(cts_in) != len(in_avals):
        raise TypeError(f"custom_vjp bwd returned {len(cts_in)} cotangents for {len(in_avals)} "
                        "inputs; return a tuple with one entry (or None) per argument")
    out = []
    for c, a, lin in zip(cts_in, in_avals, args[num_res:]):
        if c is None or not is_undef(lin):
            out.append(None)
            continue
        if tuple(get_aval(c).shape) != tuple(a.shape):
            raise TypeError(f"custom_vjp bwd returned a cotangent of shape {get_aval(c).shape} "
                            f"for an input of shape {a.shape}")
        out.append(lax.convert_element_type(c, a.dtype))
    return [None] * num_res + out


jvp_rules[custom_lin_p] = _custom_lin_jvp
transpose_rules[custom_lin_p] = _custom_lin_transpose


class custom_vjp:
    """`f = custom_vjp(f)`; `f.defvjp(fwd, bwd)` with fwd(*args) -> (out, residuals) and
    bwd(residuals, ct_out) -> tuple of cotangents, one per argument."""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun, self.fwd, self.bwd = fun, None, None
        self.nondiff_argnums = tuple(nondiff_argnums)

    def defvjp(self, fwd, bwd):
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args):
        if self.fwd is None:
            raise TypeError(f"custom_vjp function {self.__name__} has no rule: call .defvjp first")
        nd = self.nondiff_argnums
        leaves, in_tree = tree_flatten([a for i, a in enumerate(args) if i not in nd])
        trace = _jvp_trace_of(leaves)
        if trace is None:
            return self.fun(*args)
        tracers = [full_raise(trace, x) for x in leaves]
        primals = _merge(args, nd, tree_unflatten(in_tree, [t.primal for t in tracers]))
        out, res = self.fwd(*primals)
        out_leaves, out_tree = tree_flatten(out)
        res_leaves, res_tree = tree_flatten(res)
        bwd = functools.partial(self.bwd, *[args[i] for i in nd]) if nd else self.bwd
        out_avals = tuple(get_aval(o).strip_weak_type() for o in out_leaves)
        tangents = [instantiate(t.tangent) if is_differentiable(get_aval(t.primal))
                    else t.primal for t in tracers]
        t_out = bind(custom_lin_p, *res_leaves, *tangents, num_res=len(res_leaves), bwd=bwd,
                     res_tree=res_tree, in_avals=tuple(get_aval(t.primal) for t in tracers),
                     out_tree=out_tree, out_avals=out_avals)
        return tree_unflatten(out_tree, [JVPTracer(trace, p, t) for p, t in zip(out_leaves, t_out)])


# ---------------------------------------------------------------- checkpoint
remat_p = Primitive("remat", multiple_results=True)
abstract_eval_rules[remat_p] = lambda *avals, call_jaxpr: call_jaxpr.out_avals
core.call_impls[remat_p] = lambda *args, call_jaxpr: eval_jaxpr(call_jaxpr, [], args)


def checkpoint(fun):
    """fun, with its intermediate values recomputed in the backward pass instead of stored."""
    @functools.wraps(fun)
    def wrapped(*args):
        leaves, in_tree = tree_flatten(args)
        if _jvp_trace_of(leaves) is None:
            return fun(*args)
        out_tree_box = []

        def flat(*xs):
            out = fun(*tree_unflatten(in_tree, list(xs)))
            o, t = tree_flatten(out)
            out_tree_box.append(t)
            return o
        jp, consts = closure_convert(trace_to_jaxpr(flat, [get_aval(x) for x in leaves]))
        outs = bind(remat_p, *consts, *leaves, call_jaxpr=jp)
        return tree_unflatten(out_tree_box[0], outs)
    return wrapped


remat = checkpoint


def _remat_jvp(primals, tangents, *, call_jaxpr):
    nz = [not isinstance(t, Zero) for t in tangents]
    jp, consts, out_nz = jvp_jaxpr(call_jaxpr, nz, False)
    outs = bind(remat_p, *consts, *primals, *[t for t in tangents if not isinstance(t, Zero)],
                call_jaxpr=jp)
    n = len(call_jaxpr.outvars)
    it = iter(outs[n:])
    return outs[:n], [next(it) if z else Zero(a.strip_weak_type())
                      for z, a in zip(out_nz, call_jaxpr.out_avals)]


def _remat_partial_eval(eqn, uk):
    """Known outputs computed now; the unknown ones recompute everything from the inputs."""
    j = eqn.params["call_jaxpr"]
    k, _, out_uk, _ = partial_eval_jaxpr(j, uk, False)
    n_known = out_uk.count(False)
    k_j, _ = dce_jaxpr(Jaxpr([], k.invars, k.eqns, k.outvars[:n_known]))
    known_in = [x for x, u in zip(eqn.inputs, uk) if not u]
    k_eqn = Eqn(remat_p, known_in, {"call_jaxpr": k_j},
                [v for v, u in zip(eqn.outputs, out_uk) if not u])
    u_j, _ = dce_jaxpr(j, out_uk)
    u_eqn = Eqn(remat_p, list(eqn.inputs), {"call_jaxpr": u_j},
                [v for v, u in zip(eqn.outputs, out_uk) if u])
    return k_eqn, u_eqn, out_uk


def _remat_transpose(cts, *args, call_jaxpr):
    # backward_pass first recomputes the non-linear (primal) part from the residual inputs
    return backward_pass(call_jaxpr, list(args), list(cts))


def _remat_batch(size, vals, dims, *, call_jaxpr):
    from .batching import eval_batched
    return eval_batched(call_jaxpr, size, vals, dims)


batching_rules[remat_p] = _remat_batch
jvp_rules[remat_p] = _remat_jvp
partial_eval_rules[remat_p] = _remat_partial_eval
transpose_rules[remat_p] = _remat_transpose
