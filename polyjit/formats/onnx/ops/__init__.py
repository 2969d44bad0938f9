"""The op table: (domain, op type) -> OpDef. Implementations live in one module per op family.

An implementation is `fn(ctx, *inputs) -> output | tuple of outputs`, written with polyjit
ops so it traces, jits and differentiates; `ctx` (a NodeCtx) gives attributes, the opset
version (for per-opset semantics) and errors that name the node. Missing optional inputs
arrive as None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class OpDef:
    fn: Callable
    static: tuple | str = ()   # input positions needed at trace time ("all": every input)
    fold: bool = True          # may run eagerly when every input is known (not for random ops)


OPS: dict = {}


def op(*names, domain="", static=(), fold=True):
    """Register fn for the op types `names` of `domain` ("" is the ONNX domain)."""
    def deco(fn):
        for n in names:
            OPS[(domain, n)] = OpDef(fn, static, fold)
        return fn
    return deco


def lookup(domain, op_type, version):
    domain = "" if domain in ("", "ai.onnx") else domain
    return OPS.get((domain, op_type))


def supported_ops():
    return sorted(f"{d + '::' if d else ''}{n}" for d, n in OPS)


from . import elementwise, shape, reduce, nn, control, quant, contrib, misc, rnn, extra, sequence, strings  # noqa: E402,F401
