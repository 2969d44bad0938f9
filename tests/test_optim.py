"""polyjit.optim beyond tests/test_nn.py: Lion vs a float64 reference of the paper, more
torch.optim configurations, learning-rate schedules vs torch.optim.lr_scheduler, and `chain`."""
import math

import numpy as np
import pytest

import polyjit as pj
from polyjit import optim

torch = pytest.importorskip("torch", reason="torch (test extra: pip install torch==2.13.0) is not installed")


def _apply(opt, params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), state


def _trajectory(opt, w0, grads):
    """Parameters after each of the gradient steps, through one jitted step."""
    params, state = {"w": w0}, opt.init({"w": w0})
    step = pj.jit(lambda p, s, g: _apply(opt, p, s, g))
    out = []
    for g in grads:
        params, state = step(params, state, {"w": g})
        out.append(np.asarray(params["w"]))
    return out


def _torch_trajectory(make_opt, w0, grads, make_sched=None, clip=None):
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = make_opt([tw])
    sched = make_sched(topt) if make_sched else None
    out = []
    for g in grads:
        tw.grad = torch.tensor(g)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([tw], clip)
        topt.step()
        if sched is not None:
            sched.step()
        out.append(tw.detach().numpy().copy())
    return out


def _data(rng, steps=10, shape=(5, 3)):
    w0 = rng.standard_normal(shape).astype(np.float32)
    return w0, [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]


# ---------------------------------------------------------------- Lion
def _lion_reference(w0, grads, lr, b1, b2, wd):
    """Algorithm 2 of Chen et al. 2023 ("Symbolic Discovery of Optimization Algorithms"), float64."""
    w, m, out = w0.astype(np.float64), np.zeros(w0.shape), []
    for g in grads:
        g = g.astype(np.float64)
        c = b1 * m + (1 - b1) * g
        w = w - lr * (np.sign(c) + wd * w)
        m = b2 * m + (1 - b2) * g
        out.append(w)
    return out


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_paper_reference(rng, wd):
    w0, grads = _data(rng)
    got = _trajectory(optim.lion(1e-2, b1=0.9, b2=0.99, weight_decay=wd), w0, grads)
    for g, r in zip(got, _lion_reference(w0, grads, 1e-2, 0.9, 0.99, wd)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7)


def test_lion_update_is_a_sign_times_lr(rng):
    """Without decay every coordinate moves by exactly ±lr (never more, and ties at 0 only for 0)."""
    w0, grads = _data(rng, steps=3)
    prev = w0
    for w in _trajectory(optim.lion(1e-3), w0, grads):
        np.testing.assert_allclose(np.abs(w - prev), 1e-3, rtol=1e-3)
        prev = w


# ---------------------------------------------------------------- more torch.optim configurations
CONFIGS = [
    ("nesterov_wd", lambda: optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("momentum_dampening", lambda: optim.sgd(0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2)),
    ("sgd_wd", lambda: optim.sgd(0.05, weight_decay=0.1),
     lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.1)),
    ("rmsprop_momentum_wd", lambda: optim.rmsprop(1e-2, alpha=0.9, momentum=0.5, weight_decay=1e-2),
     lambda p: torch.optim.RMSprop(p, lr=1e-2, alpha=0.9, momentum=0.5, weight_decay=1e-2)),
    ("adam_betas", lambda: optim.adam(3e-2, b1=0.8, b2=0.95, eps=1e-6),
     lambda p: torch.optim.Adam(p, lr=3e-2, betas=(0.8, 0.95), eps=1e-6)),
    ("adamw_betas", lambda: optim.adamw(3e-2, b1=0.8, b2=0.95, weight_decay=0.3),
     lambda p: torch.optim.AdamW(p, lr=3e-2, betas=(0.8, 0.95), weight_decay=0.3)),
]


@pytest.mark.parametrize("name,make,make_torch", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_optimizer_configs_match_torch(rng, name, make, make_torch):
    w0, grads = _data(rng)
    for a, b in zip(_trajectory(make(), w0, grads), _torch_trajectory(make_torch, w0, grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_optimizer_state_is_a_pytree_over_nested_params(rng):
    params = {"a": rng.standard_normal(3).astype(np.float32),
              "b": [rng.standard_normal((2, 2)).astype(np.float32)]}
    opt = optim.adam(1e-2)
    state = opt.init(params)
    grads = pj.tree_util.tree_map(lambda p: p * 0.5 + 1, params)
    new, state = _apply(opt, params, state, grads)
    assert int(state["count"]) == 1
    assert pj.tree_util.tree_structure(new) == pj.tree_util.tree_structure(params)
    # the first Adam step moves every coordinate by lr * sign(g) (m_hat / sqrt(v_hat) = ±1)
    for p, n, g in zip(*(pj.tree_util.tree_leaves(t) for t in (params, new, grads))):
        np.testing.assert_allclose(np.asarray(n) - p, -1e-2 * np.sign(g), rtol=1e-5)


# ---------------------------------------------------------------- schedules vs torch.optim.lr_scheduler
def _torch_lrs(make_sched, steps, lr=0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def _ours(schedule, steps, jitted=False):
    f = pj.jit(schedule) if jitted else schedule
    return np.array([float(f(np.int32(t))) for t in range(steps)])


SCHEDULES = [
    ("constant", lambda: optim.constant_schedule(0.1),
     lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0)),
    ("step", lambda: optim.step_schedule(0.1, step_size=3, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    ("cosine", lambda: optim.cosine_decay_schedule(0.1, decay_steps=12),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12)),
    ("cosine_eta_min", lambda: optim.cosine_decay_schedule(0.1, decay_steps=12, alpha=0.2),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.02)),
    ("linear_warmup", lambda: optim.linear_warmup(0.1, warmup_steps=5, init_value=0.01),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5)),
    ("warmup_then_cosine", lambda: optim.linear_warmup(optim.cosine_decay_schedule(0.1, 8), 4, 0.025),
     lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
         torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4),
         torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8)], milestones=[4])),
]


@pytest.mark.parametrize("name,make,make_torch", SCHEDULES, ids=[s[0] for s in SCHEDULES])
@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_schedule_matches_torch_lr_scheduler(name, make, make_torch, jitted):
    steps = 13 if name.startswith("cosine") or name.startswith("warmup") else 12
    want = _torch_lrs(make_torch, steps)
    np.testing.assert_allclose(_ours(make(), steps, jitted), want, rtol=1e-6, atol=1e-9)


def test_cosine_schedule_stays_at_the_floor_after_decay_steps():
    f = optim.cosine_decay_schedule(0.1, decay_steps=10, alpha=0.1)
    np.testing.assert_allclose([float(f(np.int32(t))) for t in (10, 11, 50)], [0.01] * 3, rtol=1e-6)


def test_step_schedule_in_sgd_trajectory_matches_torch_steplr(rng):
    w0, grads = _data(rng, steps=9)
    ours = _trajectory(optim.sgd(optim.step_schedule(0.1, 3, 0.5), momentum=0.9), w0, grads)
    ref = _torch_trajectory(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), w0, grads,
                            make_sched=lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_cosine_schedule_in_adamw_trajectory_matches_torch(rng):
    w0, grads = _data(rng, steps=10)
    ours = _trajectory(optim.adamw(optim.cosine_decay_schedule(1e-2, 10), weight_decay=0.1), w0, grads)
    ref = _torch_trajectory(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1), w0, grads,
                            make_sched=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- chain
def test_chain_clip_then_sgd_matches_torch_clip_grad_norm(rng):
    w0, grads = _data(rng)
    grads = [g * s for g, s in zip(grads, [0.05, 3.0] * 5)]   # some clipped, some not
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1, momentum=0.9))
    ref = _torch_trajectory(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), w0, grads, clip=1.0)
    for a, b in zip(_trajectory(opt, w0, grads), ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_chain_equals_applying_the_transforms_in_sequence(rng):
    params = {"a": rng.standard_normal(4).astype(np.float32), "b": rng.standard_normal((2, 3)).astype(np.float32)}
    grads = {"a": 5 * rng.standard_normal(4).astype(np.float32), "b": rng.standard_normal((2, 3)).astype(np.float32)}
    clip, adam = optim.clip_by_global_norm(0.5), optim.adam(1e-2)
    chained = optim.chain(clip, adam)
    state = chained.init(params)
    assert isinstance(state, tuple) and len(state) == 2
    got, new_state = chained.update(grads, state, params)
    clipped, _ = clip.update(grads, clip.init(params), params)
    want, adam_state = adam.update(clipped, adam.init(params), params)
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new_state[1]["mu"]["a"]), np.asarray(adam_state["mu"]["a"]), rtol=1e-6)
    norm = math.sqrt(sum(float(np.sum(np.square(np.asarray(clipped[k])))) for k in params))
    assert norm == pytest.approx(0.5, rel=1e-5)
