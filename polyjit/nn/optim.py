"""Optimizers as gradient transformations (optax-style, torch.optim semantics).

A `GradientTransformation(init, update)`: `state = opt.init(params)`;
`updates, state = opt.update(grads, state, params)`; `params = apply_updates(params, updates)`.
States are pytrees of arrays, so a whole training step can be jitted and checkpointed.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

from ..tracer.tree_util import tree_leaves, tree_map


class GradientTransformation(NamedTuple):
    init: Callable
    update: Callable


def _pnp():
    from .. import numpy as pnp
    return pnp


def apply_updates(params, updates):
    return tree_map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def _lr(lr, count):
    return lr(count) if callable(lr) else lr


def _zeros_like(params):
    pnp = _pnp()
    return tree_map(lambda p: pnp.zeros(p.shape, p.dtype), params)


def chain(*transforms):
    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)
    return GradientTransformation(init, update)


def _count(state):
    return state["count"]


def sgd(learning_rate, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
    """torch.optim.SGD: buf = m*buf + (1-dampening)*(g + wd*p) (buf = g on the first step)."""
    pnp = _pnp()

    def init(params):
        state = {"count": pnp.zeros((), "int32")}
        if momentum:
            state["momentum"] = _zeros_like(params)
        return state

    def update(grads, state, params=None):
        count = state["count"]
        if weight_decay:
            grads = tree_map(lambda g, p: g + weight_decay * p, grads, params)
        new = {"count": count + 1}
        if momentum:
            first = count == 0
            buf = tree_map(lambda b, g: pnp.where(first, g, momentum * b + (1 - dampening) * g),
                           state["momentum"], grads)
            new["momentum"] = buf
            grads = tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        lr = _lr(learning_rate, count)
        return tree_map(lambda g: -lr * g, grads), new
    return GradientTransformation(init, update)


def _adam_core(b1, b2, eps, grads, state, count):
    pnp = _pnp()
    t = (count + 1).astype("float32")
    m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state["mu"], grads)
    v = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state["nu"], grads)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    step = tree_map(lambda m, v: (m / c1) / (pnp.sqrt(v / c2) + eps), m, v)
    return step, m, v


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """torch.optim.Adam (L2 weight decay added to the gradient)."""
    pnp = _pnp()

    def init(params):
        return {"count": pnp.zeros((), "int32"), "mu": _zeros_like(params), "nu": _zeros_like(params)}

    def update(grads, state, params=None):
        if weight_decay:
            grads = tree_map(lambda g, p: g + weight_decay * p, grads, params)
        step, m, v = _adam_core(b1, b2, eps, grads, state, state["count"])
        lr = _lr(learning_rate, state["count"])
        return tree_map(lambda s: -lr * s, step), {"count": state["count"] + 1, "mu": m, "nu": v}
    return GradientTransformation(init, update)


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2):
    """torch.optim.AdamW: decoupled decay p -= lr*wd*p, then the Adam step."""
    base = adam(learning_rate, b1, b2, eps)

    def update(grads, state, params):
        updates, new = base.update(grads, state, params)
        lr = _lr(learning_rate, state["count"])
        return tree_map(lambda u, p: u - lr * weight_decay * p, updates, params), new
    return GradientTransformation(base.init, update)


def rmsprop(learning_rate, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    """torch.optim.RMSprop (not centered)."""
    pnp = _pnp()

    def init(params):
        state = {"count": pnp.zeros((), "int32"), "nu": _zeros_like(params)}
        if momentum:
            state["momentum"] = _zeros_like(params)
        return state

    def update(grads, state, params=None):
        if weight_decay:
            grads = tree_map(lambda g, p: g + weight_decay * p, grads, params)
        nu = tree_map(lambda v, g: alpha * v + (1 - alpha) * g * g, state["nu"], grads)
        step = tree_map(lambda g, v: g / (pnp.sqrt(v) + eps), grads, nu)
        new = {"count": state["count"] + 1, "nu": nu}
        if momentum:
            step = new["momentum"] = tree_map(lambda b, s: momentum * b + s, state["momentum"], step)
        lr = _lr(learning_rate, state["count"])
        return tree_map(lambda s: -lr * s, step), new
    return GradientTransformation(init, update)


def lion(learning_rate, b1=0.9, b2=0.99, weight_decay=0.0):
    """Lion (Chen et al. 2023): sign of an interpolated momentum, decoupled decay."""
    pnp = _pnp()

    def init(params):
        return {"count": pnp.zeros((), "int32"), "mu": _zeros_like(params)}

    def update(grads, state, params=None):
        direction = tree_map(lambda m, g: pnp.sign(b1 * m + (1 - b1) * g), state["mu"], grads)
        if weight_decay:
            direction = tree_map(lambda d, p: d + weight_decay * p, direction, params)
        mu = tree_map(lambda m, g: b2 * m + (1 - b2) * g, state["mu"], grads)
        lr = _lr(learning_rate, state["count"])
        return tree_map(lambda d: -lr * d, direction), {"count": state["count"] + 1, "mu": mu}
    return GradientTransformation(init, update)


def clip_by_global_norm(max_norm):
    """Scale all gradients by min(1, max_norm / global_norm), as torch.nn.utils.clip_grad_norm_."""
    pnp = _pnp()

    def update(grads, state, params=None):
        norm = pnp.sqrt(sum(pnp.sum(g.astype("float32") ** 2) for g in tree_leaves(grads)))
        scale = pnp.minimum(1.0, max_norm / (norm + 1e-6))
        return tree_map(lambda g: (g * scale).astype(g.dtype), grads), state
    return GradientTransformation(lambda params: (), update)


# ---------------------------------------------------------------- schedules: count -> lr
def constant_schedule(value):
    return lambda count: value


def step_schedule(init_value, step_size, gamma=0.1):
    """torch StepLR: lr * gamma ** (count // step_size)."""
    pnp = _pnp()
    return lambda count: init_value * gamma ** (pnp.floor_divide(count, step_size).astype("float32"))


def cosine_decay_schedule(init_value, decay_steps, alpha=0.0):
    """torch CosineAnnealingLR(T_max=decay_steps, eta_min=alpha * init_value) for counts up to
    decay_steps; held at the floor afterwards (torch's would rise again)."""
    pnp = _pnp()

    def schedule(count):
        t = pnp.minimum(count.astype("float32") if hasattr(count, "astype") else count, decay_steps) / decay_steps
        return init_value * ((1 - alpha) * 0.5 * (1 + pnp.cos(math.pi * t)) + alpha)
    return schedule


def linear_warmup(schedule, warmup_steps, init_value=0.0):
    """Ramp linearly from init_value to schedule(0) over warmup_steps, then follow schedule."""
    pnp = _pnp()
    peak = schedule if callable(schedule) else constant_schedule(schedule)

    def warm(count):
        c = pnp.asarray(count).astype("float32")
        frac = pnp.minimum(c / max(warmup_steps, 1), 1.0)
        after = peak(pnp.maximum(count - warmup_steps, 0))
        return pnp.where(c < warmup_steps, init_value + frac * (peak(0) - init_value), after)
    return warm
