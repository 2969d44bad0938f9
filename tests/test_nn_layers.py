"""nn layers and initializers vs PyTorch (forward and every gradient) on random inputs."""
import math

import numpy as np
import pytest

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import nn

torch = pytest.importorskip("torch", reason="torch (test extra: pip install torch==2.13.0) is not installed")
F = torch.nn.functional


def t2n(t):
    return t.detach().numpy().copy()


def close(a, b, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _rand_params(rng, params):
    """Random values for every parameter (so ones/zeros defaults cannot hide a bug)."""
    return pj.tree_util.tree_map(lambda p: rng.standard_normal(np.shape(p)).astype(np.float32), params)


def check_against_torch(rng, module, x, tmodule, names, apply_kw=None, tin=None):
    """Forward and gradients (input and every parameter) of `module` vs `tmodule`, whose
    parameters are copied in from ours: `names` maps our param key -> torch parameter name."""
    apply_kw = apply_kw or {}
    params, state = module.init(pj.random.key(0), x)
    params = _rand_params(rng, params)
    with torch.no_grad():
        for ours, theirs in names.items():
            dict(tmodule.named_parameters())[theirs].copy_(torch.tensor(params[ours]))
    tx = torch.tensor(x, requires_grad=x.dtype.kind == "f")
    ty = tmodule(tx) if tin is None else tin(tmodule, tx)
    r = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (ty * torch.tensor(r)).sum().backward()

    def loss(p, x):
        y, _ = module.apply(p, state, x, **apply_kw)
        return pnp.sum(y * r), y
    if x.dtype.kind == "f":
        (_, y), (gp, gx) = pj.jit(pj.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
        close(gx, t2n(tx.grad))
    else:
        (_, y), gp = pj.jit(pj.value_and_grad(loss, has_aux=True))(params, x)
    close(y, t2n(ty))
    tparams = dict(tmodule.named_parameters())
    for ours, theirs in names.items():
        close(gp[ours], t2n(tparams[theirs].grad))
    assert set(gp) == set(names), f"untested parameters {set(gp) - set(names)}"
    return y


# ---------------------------------------------------------------- Conv1d
CONV1D = [  # (kwargs, torch kwargs)
    (dict(stride=2), dict(stride=2)),
    (dict(padding=2), dict(padding=2)),
    (dict(padding="same"), dict(padding="same")),
    (dict(padding="valid", dilation=3), dict(padding="valid", dilation=3)),
    (dict(padding="same", dilation=2, groups=2), dict(padding="same", dilation=2, groups=2)),
    (dict(stride=3, padding=1, dilation=2, groups=4), dict(stride=3, padding=1, dilation=2, groups=4)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kw,tkw", CONV1D, ids=[str(c[0]) for c in CONV1D])
@pytest.mark.parametrize("k", [3, 4])
def test_conv1d_matches_torch(rng, kw, tkw, k):
    x = rng.standard_normal((2, 4, 11)).astype(np.float32)
    m = nn.Conv1d(8, k, **kw)
    t = torch.nn.Conv1d(4, 8, k, **tkw)
    check_against_torch(rng, m, x, t, {"weight": "weight", "bias": "bias"})


def test_conv1d_init_shapes_and_no_bias(rng):
    x = rng.standard_normal((2, 6, 9)).astype(np.float32)
    p, _ = nn.Conv1d(4, 3, groups=2, use_bias=False).init(pj.random.key(1), x)
    assert set(p) == {"weight"} and p["weight"].shape == (4, 3, 3)


def test_conv2d_strided_rectangular_matches_torch(rng):
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    m = nn.Conv2d(6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    t = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    check_against_torch(rng, m, x, t, {"weight": "weight", "bias": "bias"})


# ---------------------------------------------------------------- ConvTranspose2d
CONVT = [
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(2, 3), padding=(0, 1)),
    dict(stride=2, dilation=2, groups=2),
    dict(stride=1, padding=2, dilation=(1, 2)),
]


@pytest.mark.parametrize("kw", CONVT, ids=[str(c) for c in CONVT])
def test_conv_transpose2d_matches_torch(rng, kw):
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    m = nn.ConvTranspose2d(6, 3, **kw)
    t = torch.nn.ConvTranspose2d(4, 6, 3, **kw)
    check_against_torch(rng, m, x, t, {"weight": "weight", "bias": "bias"})


# ---------------------------------------------------------------- Embedding and norms
def test_embedding_matches_torch_including_repeated_ids(rng):
    ids = rng.integers(0, 10, (3, 7)).astype(np.int32)
    ids[0, :3] = 4   # repeated ids: their gradients add up
    check_against_torch(rng, nn.Embedding(10, 5), ids, torch.nn.Embedding(10, 5),
                        {"weight": "weight"}, tin=lambda t, x: t(x.long()))


def test_embedding_default_init_is_standard_normal_like_torch():
    w = np.asarray(nn.Embedding(1000, 64).init(pj.random.key(3), np.zeros((1,), np.int32))[0]["weight"])
    assert abs(w.mean()) < 0.01 and w.std() == pytest.approx(1.0, rel=0.02)


def test_embedding_rejects_float_ids():
    m = nn.Embedding(4, 2)
    p, _ = m.init(pj.random.key(0), np.zeros(1, np.int32))
    with pytest.raises(TypeError, match="ids must be integers"):
        m.apply(p, {}, np.ones(3, np.float32))


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rmsnorm_matches_torch(rng, eps):
    x = rng.standard_normal((3, 4, 8)).astype(np.float32) * 3
    check_against_torch(rng, nn.RMSNorm(eps=eps), x, torch.nn.RMSNorm(8, eps=eps), {"weight": "weight"})


@pytest.mark.parametrize("groups,shape", [(2, (2, 4, 5, 5)), (3, (2, 6, 7)), (1, (3, 4, 2, 3)), (4, (2, 4, 3))])
def test_groupnorm_matches_torch(rng, groups, shape):
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    check_against_torch(rng, nn.GroupNorm(groups), x, torch.nn.GroupNorm(groups, shape[1]),
                        {"weight": "weight", "bias": "bias"})


def test_layernorm_matches_torch(rng):
    x = (rng.standard_normal((3, 5, 8)) * 2 + 1).astype(np.float32)
    check_against_torch(rng, nn.LayerNorm(), x, torch.nn.LayerNorm(8), {"weight": "weight", "bias": "bias"})


def test_batchnorm_eval_uses_running_stats_like_torch(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    m, t = nn.BatchNorm(), torch.nn.BatchNorm2d(3)
    params, state = m.init(pj.random.key(0), x)
    params = _rand_params(rng, params)
    with torch.no_grad():
        t.weight.copy_(torch.tensor(params["weight"]))
        t.bias.copy_(torch.tensor(params["bias"]))
    for _ in range(2):
        _, state = m.apply(params, state, x * 2 + 1, train=True)
        t.train()(torch.tensor(x * 2 + 1))
    close(m.apply(params, state, x)[0], t2n(t.eval()(torch.tensor(x))))


# ---------------------------------------------------------------- pools
POOLS = [
    (lambda: nn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1), lambda: torch.nn.AvgPool2d(3, stride=2, padding=1)),
    (lambda: nn.AvgPool2d((2, 3), stride=(1, 2)), lambda: torch.nn.AvgPool2d((2, 3), stride=(1, 2))),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: torch.nn.MaxPool2d(3, stride=2, padding=1)),
    (lambda: nn.GlobalAvgPool(), lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())),
]


@pytest.mark.parametrize("make,make_torch", POOLS, ids=["avg2", "avg3s2p1", "avg_rect", "max3s2p1", "global"])
def test_pools_match_torch(rng, make, make_torch):
    x = (rng.standard_normal((2, 3, 7, 8)) - 2).astype(np.float32)   # mostly negative: padding must not win
    check_against_torch(rng, make(), x, make_torch(), {})


def test_global_avg_pool_over_1d_and_3d(rng):
    for shape in [(2, 3, 5), (2, 3, 2, 3, 4)]:
        x = rng.standard_normal(shape).astype(np.float32)
        close(nn.GlobalAvgPool().apply({}, {}, x)[0], x.reshape(2, 3, -1).mean(-1), rtol=1e-5)


# ---------------------------------------------------------------- attention
def _mha_params(rng, e, h, kvh, bias=True):
    hd = e // h
    lin = lambda o, i: ({"weight": rng.standard_normal((o, i)).astype(np.float32) / math.sqrt(i)}
                        | ({"bias": rng.standard_normal(o).astype(np.float32) * 0.1} if bias else {}))
    return {"q": lin(e, e), "k": lin(kvh * hd, e), "v": lin(kvh * hd, e), "out": lin(e, e)}


def _tlin(p, x):
    return F.linear(x, torch.as_tensor(p["weight"]), torch.as_tensor(p["bias"]) if "bias" in p else None)


def _torch_attention(p, x, h, kvh, causal=False, keep=None, rope_fn=None):
    """Reference: projections, optional rope, K/V heads repeated, scaled_dot_product_attention."""
    b, s, e = x.shape
    hd = e // h
    split = lambda t, n: t.reshape(b, s, n, hd).transpose(1, 2)
    q, k, v = (split(_tlin(p[n], x), c) for n, c in (("q", h), ("k", kvh), ("v", kvh)))
    if rope_fn is not None:
        q, k = rope_fn(q), rope_fn(k)
    k, v = k.repeat_interleave(h // kvh, dim=1), v.repeat_interleave(h // kvh, dim=1)
    mask = None
    if causal:
        mask = torch.tril(torch.ones(s, s, dtype=torch.bool))[None, None]
    if keep is not None:
        pad = torch.tensor(keep)[:, None, None, :]
        mask = pad if mask is None else mask & pad
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return _tlin(p["out"], out.transpose(1, 2).reshape(b, s, e))


def _check_mha(rng, m, x, h, kvh, causal=False, keep=None, rope_fn=None, bias=True):
    params = _mha_params(rng, x.shape[-1], h, kvh, bias)
    ref_init, _ = m.init(pj.random.key(0), x)
    assert pj.tree_util.tree_structure(ref_init) == pj.tree_util.tree_structure(params)
    tp = pj.tree_util.tree_map(lambda a: torch.tensor(a, requires_grad=True), params)
    tx = torch.tensor(x, requires_grad=True)
    ty = _torch_attention(tp, tx, h, kvh, causal, keep, rope_fn)
    r = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (ty * torch.tensor(r)).sum().backward()

    def loss(p, x):
        y = m.apply(p, {}, x, mask=keep)[0]
        return pnp.sum(y * r), y
    (_, y), (gp, gx) = pj.jit(pj.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
    close(y, t2n(ty))
    close(gx, t2n(tx.grad))
    for (path, g), t in zip(pj.tree_util.tree_flatten_with_path(gp)[0], pj.tree_util.tree_leaves(tp)):
        np.testing.assert_allclose(np.asarray(g), t2n(t.grad), rtol=1e-4, atol=1e-5, err_msg=path)


def _padding_mask(rng, b, s):
    lengths = rng.integers(1, s + 1, b)
    lengths[0] = s - 2   # at least one padded sequence
    return np.arange(s)[None, :] < lengths[:, None]


@pytest.mark.parametrize("causal", [False, True])
def test_mha_padding_mask_matches_torch(rng, causal):
    b, s, e, h = 3, 6, 16, 4
    x = rng.standard_normal((b, s, e)).astype(np.float32)
    _check_mha(rng, nn.MultiHeadAttention(h, causal=causal), x, h, h, causal, _padding_mask(rng, b, s))


def test_mha_padding_mask_matches_torch_multihead_attention(rng):
    """The same as torch.nn.MultiheadAttention(key_padding_mask = ~mask)."""
    b, s, e, h = 2, 5, 8, 2
    x = rng.standard_normal((b, s, e)).astype(np.float32)
    keep = _padding_mask(rng, b, s)
    t = torch.nn.MultiheadAttention(e, h, batch_first=True)
    wq, wk, wv = np.split(t2n(t.in_proj_weight), 3)
    bq, bk, bv = (rng.standard_normal(e).astype(np.float32) for _ in range(3))
    with torch.no_grad():
        t.in_proj_bias.copy_(torch.tensor(np.concatenate([bq, bk, bv])))
        t.out_proj.bias.copy_(torch.tensor(rng.standard_normal(e).astype(np.float32)))
    params = {"q": {"weight": wq, "bias": bq}, "k": {"weight": wk, "bias": bk}, "v": {"weight": wv, "bias": bv},
              "out": {"weight": t2n(t.out_proj.weight), "bias": t2n(t.out_proj.bias)}}
    tx = torch.tensor(x)
    want = t(tx, tx, tx, key_padding_mask=torch.tensor(~keep), need_weights=False)[0]
    close(nn.MultiHeadAttention(h).apply(params, {}, x, mask=keep)[0], t2n(want))


@pytest.mark.parametrize("h,kvh", [(4, 2), (4, 1), (6, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_mha_grouped_query_heads_match_torch_sdpa(rng, h, kvh, causal):
    b, s, e = 2, 5, 24
    x = rng.standard_normal((b, s, e)).astype(np.float32)
    keep = _padding_mask(rng, b, s)
    _check_mha(rng, nn.MultiHeadAttention(h, num_kv_heads=kvh, causal=causal), x, h, kvh, causal, keep)


def test_mha_grouped_query_matches_sdpa_enable_gqa(rng):
    b, s, e, h, kvh = 2, 4, 16, 4, 2
    x = rng.standard_normal((b, s, e)).astype(np.float32)
    params = _mha_params(rng, e, h, kvh)
    hd = e // h
    tx = torch.tensor(x)
    split = lambda t, n: t.reshape(b, s, n, hd).transpose(1, 2)
    q, k, v = (split(_tlin(params[n], tx), c) for n, c in (("q", h), ("k", kvh), ("v", kvh)))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    want = _tlin(params["out"], out.transpose(1, 2).reshape(b, s, e))
    close(nn.MultiHeadAttention(h, num_kv_heads=kvh, causal=True).apply(params, {}, x)[0], t2n(want))


def _rope_reference(x, positions, theta=10000.0):
    """Rotary embedding, NeoX / LLaMA-HF "rotate_half" layout, float64: pair (i, i + d/2)
    rotates by the angle pos * theta**(-2i/d)."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d // 2, dtype=np.float64) * 2 / d)
    ang = np.asarray(positions, np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


@pytest.mark.parametrize("theta", [10000.0, 500.0])
def test_rope_matches_float64_reference(rng, theta):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    pos = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34])
    y = np.asarray(nn.rope(x, pos, theta))
    np.testing.assert_allclose(y, _rope_reference(x, pos, theta), rtol=1e-5, atol=1e-5)
    # a rotation: norms of each (i, i + d/2) pair are preserved, position 0 is the identity
    np.testing.assert_allclose(np.hypot(y[..., :4], y[..., 4:]), np.hypot(x[..., :4], x[..., 4:]), rtol=1e-5)
    np.testing.assert_allclose(y[..., 0, :], x[..., 0, :], rtol=1e-6)


def test_rope_scores_depend_only_on_relative_position(rng):
    q, k = rng.standard_normal((1, 8)).astype(np.float32), rng.standard_normal((1, 8)).astype(np.float32)
    dots = [float(np.asarray(nn.rope(q, np.array([p + 3])) @ nn.rope(k, np.array([p])).T)[0, 0]) for p in (0, 5, 17)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-4)


def test_rope_rejects_odd_head_dim(rng):
    with pytest.raises(pj.ShapeError, match="even"):
        nn.rope(rng.standard_normal((4, 5)).astype(np.float32), np.arange(4))
    with pytest.raises(pj.ShapeError, match=r"positions of shape \(3,\)"):
        nn.rope(rng.standard_normal((2, 4, 6)).astype(np.float32), np.arange(3))


@pytest.mark.parametrize("h,kvh", [(4, 4), (4, 2)])
def test_mha_with_rope_matches_reference(rng, h, kvh):
    b, s, e = 2, 6, 32
    x = rng.standard_normal((b, s, e)).astype(np.float32)

    def trope(t):   # the float64 reference, differentiable through torch
        d = t.shape[-1]
        inv = 10000.0 ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
        ang = torch.arange(s, dtype=torch.float64)[:, None] * inv[None, :]
        cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
        t1, t2 = t[..., : d // 2], t[..., d // 2:]
        return torch.cat([t1 * cos - t2 * sin, t1 * sin + t2 * cos], dim=-1)
    _check_mha(rng, nn.MultiHeadAttention(h, num_kv_heads=kvh, causal=True, use_rope=True, use_bias=False), x, h, kvh,
               causal=True, rope_fn=trope, bias=False)
    q = np.asarray(x[0] @ rng.standard_normal((e, e)).astype(np.float32)).reshape(s, h, e // h).transpose(1, 0, 2)
    np.testing.assert_allclose(trope(torch.tensor(q)).numpy(), _rope_reference(q, np.arange(s)), rtol=1e-5, atol=1e-5)


def test_mha_rejects_heads_that_do_not_divide(rng):
    x = rng.standard_normal((1, 2, 12)).astype(np.float32)
    with pytest.raises(pj.ShapeError, match="divide"):
        nn.MultiHeadAttention(5).init(pj.random.key(0), x)
    with pytest.raises(pj.ShapeError, match="divide"):
        nn.MultiHeadAttention(4, num_kv_heads=3).init(pj.random.key(0), x)


# ---------------------------------------------------------------- initializers
def _sample(init, shape, seed=0):
    return np.asarray(init(pj.random.key(seed), shape), np.float64)


@pytest.mark.parametrize("shape", [(512, 1024), (128, 64, 3, 3), (256, 32, 5)])
def test_torch_default_weight_init_bounds_and_std(shape):
    fan_in = math.prod(shape[1:])
    w = torch.empty(shape)
    torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))          # torch's Linear/Conv default
    bound = 1 / math.sqrt(fan_in)
    assert float(w.abs().max()) <= bound
    ours = _sample(nn.initializers.torch_default_weight, shape)
    assert np.abs(ours).max() <= bound * (1 + 1e-6)
    assert np.abs(ours).max() > 0.99 * bound                   # the full range is used
    assert abs(ours.mean()) < 0.01 * bound
    assert ours.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert ours.std() == pytest.approx(float(w.double().std()), rel=0.03)


def test_linear_and_conv_default_init_match_torch_bounds():
    x = np.ones((2, 300), np.float32)
    p, _ = nn.Linear(400).init(pj.random.key(0), x)
    tl = torch.nn.Linear(300, 400)
    for n in ("weight", "bias"):
        ours, theirs = np.asarray(p[n]), t2n(getattr(tl, n))
        assert ours.shape == theirs.shape
        assert np.abs(ours).max() <= 1 / math.sqrt(300) * (1 + 1e-6)
        assert np.abs(ours).max() > 0.95 / math.sqrt(300)
    assert np.asarray(p["weight"]).std() == pytest.approx(t2n(tl.weight).std(), rel=0.03)

    xc = np.ones((1, 16, 8, 8), np.float32)
    p, _ = nn.Conv2d(64, 3, groups=4).init(pj.random.key(1), xc)
    tc = torch.nn.Conv2d(16, 64, 3, groups=4)
    fan_in = 16 // 4 * 9
    assert p["weight"].shape == tuple(tc.weight.shape)
    for n in ("weight", "bias"):
        assert np.abs(np.asarray(p[n])).max() <= 1 / math.sqrt(fan_in) * (1 + 1e-6)
        assert float(getattr(tc, n).detach().abs().max()) <= 1 / math.sqrt(fan_in)
    assert np.asarray(p["weight"]).std() == pytest.approx(t2n(tc.weight).std(), rel=0.05)

    pt, _ = nn.ConvTranspose2d(12, 3, groups=2).init(pj.random.key(2), xc)
    tt = torch.nn.ConvTranspose2d(16, 12, 3, groups=2)
    assert pt["weight"].shape == tuple(tt.weight.shape)
    fan_in = 12 // 2 * 9   # torch: dim 1 of the (in, out/groups, k, k) weight
    assert np.abs(np.asarray(pt["weight"])).max() <= 1 / math.sqrt(fan_in) * (1 + 1e-6)
    assert np.asarray(pt["weight"]).std() == pytest.approx(t2n(tt.weight).std(), rel=0.05)


INITS = [  # (ours, torch in-place initializer, uniform bound or None)
    ("he_normal", nn.initializers.he_normal(), lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu")),
    ("he_uniform", nn.initializers.he_uniform(), lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")),
    ("glorot_normal", nn.initializers.glorot_normal(), torch.nn.init.xavier_normal_),
    ("glorot_uniform", nn.initializers.glorot_uniform(), torch.nn.init.xavier_uniform_),
    ("glorot_uniform_gain", nn.initializers.glorot_uniform(gain=2.0), lambda w: torch.nn.init.xavier_uniform_(w, 2.0)),
    ("lecun_normal", nn.initializers.lecun_normal(), lambda w: torch.nn.init.normal_(w, 0, 1 / math.sqrt(w.shape[1] * w[0, 0].numel()))),
    ("uniform", nn.initializers.uniform(0.3), lambda w: torch.nn.init.uniform_(w, -0.3, 0.3)),
    ("normal", nn.initializers.normal(0.02), lambda w: torch.nn.init.normal_(w, 0, 0.02)),
]


@pytest.mark.parametrize("name,ours,theirs", INITS, ids=[i[0] for i in INITS])
@pytest.mark.parametrize("shape", [(400, 600), (64, 32, 3, 3)])
def test_initializers_match_torch_statistics(name, ours, theirs, shape):
    w = _sample(ours, shape)
    torch.manual_seed(0)
    t = theirs(torch.empty(shape, dtype=torch.float64)).numpy()
    assert abs(w.mean()) < 0.01 * t.std()
    assert w.std() == pytest.approx(t.std(), rel=0.02)
    if "uniform" in name:
        assert np.abs(w).max() <= np.abs(t).max() * 1.001 and np.abs(w).max() > 0.99 * np.abs(t).max()
    else:   # a normal: about 4.55% beyond 2 of its std (ours: torch's sample std wanders)
        assert np.mean(np.abs(w) > 2 * w.std()) == pytest.approx(0.0455, abs=0.004)
        assert np.abs(w).max() < 6 * t.std()


def test_fans_match_torch_layouts():
    for shape in [(5, 7), (8, 4, 3, 3), (6, 2, 5), (3, 2, 2, 3, 4)]:
        assert nn.initializers._fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_initializers_are_deterministic_per_key():
    a = _sample(nn.initializers.he_normal(), (10, 10), seed=1)
    np.testing.assert_array_equal(a, _sample(nn.initializers.he_normal(), (10, 10), seed=1))
    assert not np.array_equal(a, _sample(nn.initializers.he_normal(), (10, 10), seed=2))
