"""Partial evaluation of jaxprs: split a program into what is known now and what is not.

Reverse mode is linearize + transpose. Linearize traces the JVP of a function into one
jaxpr, then splits it here with the primal inputs known and the tangent inputs unknown:
the known jaxpr computes the primal outputs plus the residuals the tangent side needs,
and the unknown jaxpr is linear in the tangents, ready to transpose. Control-flow
primitives split their bodies through `partial_eval_rules`.
"""
from __future__ import annotations

from ..tracer.core import Eqn, Jaxpr, Literal, Var

# prim -> rule(eqn, in_unknowns) -> (known_eqn | None, unknown_eqn | None, out_unknowns)
partial_eval_rules: dict = {}


def partial_eval_jaxpr(jaxpr: Jaxpr, in_unknowns, instantiate):
    """Split `jaxpr` (no constvars) by which inputs are unknown.

    Returns (known, unknown, out_unknowns, num_res): `known` maps the known inputs to the
    known outputs followed by residuals; `unknown` maps residuals followed by the unknown
    inputs to the unknown outputs. Outputs marked in `instantiate` are made unknown."""
    assert not jaxpr.constvars, "closure-convert the jaxpr first"
    if isinstance(instantiate, bool):
        instantiate = [instantiate] * len(jaxpr.outvars)
    unknown = {v for v, u in zip(jaxpr.invars, in_unknowns) if u}
    known_eqns, unknown_eqns = [], []
    for e in jaxpr.eqns:
        uk = [isinstance(x, Var) and x in unknown for x in e.inputs]
        if not any(uk):
            known_eqns.append(e)
            continue
        rule = partial_eval_rules.get(e.prim)
        if rule is None:
            unknown_eqns.append(e)
            unknown.update(e.outputs)
            continue
        k_eqn, u_eqn, out_uk = rule(e, uk)
        if k_eqn is not None:
            known_eqns.append(k_eqn)
        if u_eqn is not None:
            unknown_eqns.append(u_eqn)
        unknown.update(v for v, u in zip(e.outputs, out_uk) if u)

    out_unknowns = [isinstance(v, Var) and v in unknown or inst
                    for v, inst in zip(jaxpr.outvars, instantiate)]
    residuals, seen = [], set()

    def residual(x):
        if isinstance(x, Var) and x not in unknown and x not in seen:
            seen.add(x)
            residuals.append(x)
    for e in unknown_eqns:
        for x in e.inputs:
            residual(x)
    for v, u in zip(jaxpr.outvars, out_unknowns):
        if u:
            residual(v)     # a known value returned where an unknown one is expected

    known_in = [v for v, u in zip(jaxpr.invars, in_unknowns) if not u]
    unknown_in = [v for v, u in zip(jaxpr.invars, in_unknowns) if u]
    known_out = [v for v, u in zip(jaxpr.outvars, out_unknowns) if not u]
    unknown_out = [v for v, u in zip(jaxpr.outvars, out_unknowns) if u]
    known = Jaxpr([], known_in, known_eqns, known_out + residuals)
    unknown_jaxpr = Jaxpr([], residuals + unknown_in, unknown_eqns, unknown_out)
    return known, unknown_jaxpr, out_unknowns, len(residuals)


def fresh_like(vs):
    return [Var(v.aval) for v in vs]


def literal_or_var(x):
    return x if isinstance(x, Literal) else x
