"""nn layers, losses, optimizers and training utilities, checked against PyTorch."""
import numpy as np
import pytest

import polyjit as pj
import polyjit.numpy as pnp
from polyjit import nn, optim
from polyjit.nn import train

torch = pytest.importorskip("torch", reason="torch (test extra: pip install torch==2.13.0) is not installed")


def t2n(t):
    return t.detach().numpy().copy()


def close(a, b, rtol=1e-4, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- a CNN training step
def _cnn_pair(rng):
    tm = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                             torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Dropout(0.0),
                             torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
    pm = nn.Sequential(nn.Conv2d(8, 3, padding=1), nn.BatchNorm(), nn.relu, nn.MaxPool2d(2),
                       nn.Dropout(0.0), nn.Flatten(), nn.Linear(10))
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    params, state = pm.init(pj.random.key(0), x)
    params = {"0": {"weight": t2n(tm[0].weight), "bias": t2n(tm[0].bias)},
              "1": {"weight": t2n(tm[1].weight), "bias": t2n(tm[1].bias)},
              "6": {"weight": t2n(tm[6].weight), "bias": t2n(tm[6].bias)}}
    return tm, pm, params, state, x


def test_cnn_training_step_matches_pytorch(backend, rng):
    torch.manual_seed(0)
    tm, pm, params, state, x = _cnn_pair(rng)
    y = rng.integers(0, 10, 4).astype(np.int32)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    tloss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y, dtype=torch.long))
    tloss.backward()
    tgrads = {n: t2n(p.grad) for n, p in tm.named_parameters()}
    topt.step()

    def loss_fn(p, s):
        logits, s = pm.apply(p, s, x, train=True)
        return nn.softmax_cross_entropy(logits, y), s
    (loss, new_state), grads = pj.jit(pj.value_and_grad(loss_fn, has_aux=True))(params, state)
    opt = optim.sgd(0.1, momentum=0.9)
    updates, _ = opt.update(grads, opt.init(params), params)
    new_params = optim.apply_updates(params, updates)
    close(loss, tloss.item())
    names = {"0": "0", "1": "1", "6": "6"}
    for k, tk in names.items():
        for w in ("weight", "bias"):
            close(grads[k][w], tgrads[f"{tk}.{w}"])
            close(new_params[k][w], t2n(dict(tm.named_parameters())[f"{tk}.{w}"]))
    close(new_state["1"]["running_mean"], t2n(tm[1].running_mean))
    close(new_state["1"]["running_var"], t2n(tm[1].running_var))


# ---------------------------------------------------------------- optimizers vs torch.optim
OPTIMIZERS = [
    ("sgd", lambda: optim.sgd(0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    ("momentum", lambda: optim.sgd(0.05, momentum=0.9, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2)),
    ("nesterov", lambda: optim.sgd(0.05, momentum=0.9, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", lambda: optim.adam(1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    ("adam_l2", lambda: optim.adam(1e-2, weight_decay=1e-2),
     lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2)),
    ("adamw", lambda: optim.adamw(1e-2, weight_decay=0.1),
     lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)),
    ("rmsprop", lambda: optim.rmsprop(1e-2), lambda p: torch.optim.RMSprop(p, lr=1e-2)),
]


@pytest.mark.parametrize("name,make,make_torch", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_optimizer_matches_torch_over_10_steps(rng, name, make, make_torch):
    w0 = rng.standard_normal((5, 3)).astype(np.float32)
    grads = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(10)]
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = make_torch([tw])
    opt = make()
    params = {"w": w0}
    state = opt.init(params)
    step = pj.jit(lambda p, s, g: _apply(opt, p, s, g))
    for g in grads:
        tw.grad = torch.tensor(g)
        topt.step()
        params, state = step(params, state, {"w": g})
        close(params["w"], t2n(tw), rtol=1e-5)


def _apply(opt, params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optim.apply_updates(params, updates), state


def test_clip_by_global_norm_matches_torch(rng):
    gs = [rng.standard_normal(4).astype(np.float32) * 10, rng.standard_normal((2, 2)).astype(np.float32)]
    ts = [torch.nn.Parameter(torch.zeros(g.shape)) for g in gs]
    for t, g in zip(ts, gs):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(ts, 1.0)
    clipped, _ = optim.clip_by_global_norm(1.0).update(gs, ())
    for c, t in zip(clipped, ts):
        close(c, t2n(t.grad), rtol=1e-5)


# ---------------------------------------------------------------- a transformer block
def test_transformer_block_matches_pytorch(rng):
    torch.manual_seed(0)
    e, h, s, b = 16, 4, 5, 2
    x = rng.standard_normal((b, s, e)).astype(np.float32)
    tln1, tln2 = torch.nn.LayerNorm(e), torch.nn.LayerNorm(e)
    tattn = torch.nn.MultiheadAttention(e, h, batch_first=True)
    tfc1, tfc2 = torch.nn.Linear(e, 4 * e), torch.nn.Linear(4 * e, e)
    causal = torch.triu(torch.ones(s, s, dtype=torch.bool), 1)
    tx = torch.tensor(x, requires_grad=True)

    def tblock(x):
        a = tln1(x)
        x = x + tattn(a, a, a, attn_mask=causal, need_weights=False)[0]
        return x + tfc2(torch.nn.functional.gelu(tfc1(tln2(x))))
    tout = tblock(tx)
    tout.square().sum().backward()

    ln, attn = nn.LayerNorm(), nn.MultiHeadAttention(h, causal=True)
    fc1, fc2 = nn.Linear(4 * e), nn.Linear(e)
    wq, wk, wv = np.split(t2n(tattn.in_proj_weight), 3)
    bq, bk, bv = np.split(t2n(tattn.in_proj_bias), 3)
    lin = lambda w, bias: {"weight": w, "bias": bias}
    params = {"ln1": lin(t2n(tln1.weight), t2n(tln1.bias)), "ln2": lin(t2n(tln2.weight), t2n(tln2.bias)),
              "attn": {"q": lin(wq, bq), "k": lin(wk, bk), "v": lin(wv, bv),
                       "out": lin(t2n(tattn.out_proj.weight), t2n(tattn.out_proj.bias))},
              "fc1": lin(t2n(tfc1.weight), t2n(tfc1.bias)), "fc2": lin(t2n(tfc2.weight), t2n(tfc2.bias))}

    def block(p, x):
        a = ln.forward(p["ln1"], x)
        x = x + attn.apply(p["attn"], {}, a)[0]
        return x + fc2.forward(p["fc2"], nn.gelu(fc1.forward(p["fc1"], ln.forward(p["ln2"], x)), approximate=False))
    close(block(params, x), t2n(tout))
    gp, gx = pj.jit(pj.grad(lambda p, x: pnp.sum(pnp.square(block(p, x))), argnums=(0, 1)))(params, x)
    close(gx, t2n(tx.grad), rtol=1e-4, atol=1e-5)
    gw, gb = np.split(t2n(tattn.in_proj_weight.grad), 3), np.split(t2n(tattn.in_proj_bias.grad), 3)
    want = {"attn": {n: {"weight": gw[i], "bias": gb[i]} for i, n in enumerate("qkv")}}
    want["attn"]["out"] = {"weight": t2n(tattn.out_proj.weight.grad), "bias": t2n(tattn.out_proj.bias.grad)}
    for name, t in (("ln1", tln1), ("ln2", tln2), ("fc1", tfc1), ("fc2", tfc2)):
        want[name] = {"weight": t2n(t.weight.grad), "bias": t2n(t.bias.grad)}
    got_leaves, got_def = pj.tree_util.tree_flatten_with_path(gp)
    assert got_def == pj.tree_util.tree_structure(want)
    assert len(got_leaves) == 16   # every weight and bias of the block
    for (path, g), w in zip(got_leaves, pj.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-5, err_msg=path)


# ---------------------------------------------------------------- checkpoints and resume
def _tiny_run(tmp_path, epochs, resume_from=None, start=0):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = nn.Sequential(nn.Linear(8), nn.relu, nn.Dropout(0.1), nn.Linear(2))
    opt = optim.adam(1e-2)
    state = train.init_train_state(model, opt, pj.random.key(0), x[:2])
    if resume_from:
        state, meta = train.load_checkpoint(resume_from, state)
        start = meta["epoch"]
    step = train.classifier_step(model, opt, seed=3)
    ckpt = tmp_path / "ckpt.safetensors"
    state, _ = train.fit(step, state, (x, y), epochs=epochs, batch_size=16, seed=3, start_epoch=start,
                         checkpoint=ckpt, progress=False, log=lambda s: None)
    return state, ckpt


def test_resumed_run_ends_bit_identical_to_uninterrupted(tmp_path):
    for d in "ab":
        (tmp_path / d).mkdir()
    full, _ = _tiny_run(tmp_path / "a", 2)
    _, ckpt = _tiny_run(tmp_path / "b", 1)
    resumed, _ = _tiny_run(tmp_path / "b", 2, resume_from=ckpt)
    for a, b in zip(pj.tree_util.tree_leaves(full), pj.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_of_another_architecture_names_the_mismatch(tmp_path):
    m1, m2 = nn.Sequential(nn.Linear(4)), nn.Sequential(nn.Linear(5))
    x = np.ones((1, 3), np.float32)
    p1, _ = m1.init(pj.random.key(0), x)
    p2, _ = m2.init(pj.random.key(0), x)
    train.save_checkpoint(tmp_path / "c.safetensors", p1)
    with pytest.raises(ValueError, match=r"\['0'\]\['weight'\]: checkpoint \(4, 3\)"):
        train.load_checkpoint(tmp_path / "c.safetensors", p2)


def test_wrong_input_shape_names_layer_expected_and_given():
    layer = nn.Linear(4)
    params, _ = layer.init(pj.random.key(0), np.ones((2, 3), np.float32))
    with pytest.raises(pj.ShapeError, match=r"Linear\(features=4.*expected input of shape \(\*, 3\), got \(2, 5\)"):
        layer.apply(params, {}, np.ones((2, 5), np.float32))


def test_conv_transpose_matches_pytorch(rng):
    t = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    m = nn.ConvTranspose2d(6, 3, stride=2, padding=1, output_padding=1, groups=2)
    params = {"weight": t2n(t.weight), "bias": t2n(t.bias)}
    close(m.apply(params, {}, x)[0], t2n(t(torch.tensor(x))))


@pytest.mark.parametrize("layer,tlayer", [
    (lambda: nn.GroupNorm(2), lambda: torch.nn.GroupNorm(2, 4)),
    (lambda: nn.AvgPool2d(2, padding=1), lambda: torch.nn.AvgPool2d(2, padding=1)),
    (lambda: nn.Conv2d(4, 3, padding="same", dilation=2, groups=4), None),
])
def test_layers_match_pytorch(rng, layer, tlayer):
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    m = layer()
    params, state = m.init(pj.random.key(0), x)
    if tlayer is None:   # depthwise dilated "same" conv
        t = torch.nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=4)
        params = {"weight": t2n(t.weight), "bias": t2n(t.bias)}
    else:
        t = tlayer()
    close(m.apply(params, state, x)[0], t2n(t(torch.tensor(x))))


def test_losses_match_pytorch(rng):
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6).astype(np.int32)
    tl, ty = torch.tensor(logits), torch.tensor(labels, dtype=torch.long)
    F = torch.nn.functional
    close(nn.softmax_cross_entropy(logits, labels, label_smoothing=0.1),
          F.cross_entropy(tl, ty, label_smoothing=0.1).item())
    t = rng.random((6, 5)).astype(np.float32)
    close(nn.binary_cross_entropy_with_logits(logits, t), F.binary_cross_entropy_with_logits(tl, torch.tensor(t)).item())
    close(nn.huber(logits, t), F.huber_loss(tl, torch.tensor(t)).item())
    close(nn.mse(logits, t), F.mse_loss(tl, torch.tensor(t)).item())
    close(nn.l1(logits, t), F.l1_loss(tl, torch.tensor(t)).item())


def test_sequential_shape_error_names_the_layer_index():
    model = nn.Sequential(nn.Linear(8), nn.relu, nn.Linear(3))
    params, _ = model.init(pj.random.key(0), np.ones((2, 5), np.float32))
    bad = {"0": params["0"], "2": {"weight": np.ones((3, 7), np.float32), "bias": np.ones(3, np.float32)}}
    with pytest.raises(pj.ShapeError, match=r"Sequential layer 2 \(Linear\): Linear\(features=3.*"
                                            r"expected input of shape \(\*, 7\), got \(2, 8\)"):
        model.apply(bad, {}, np.ones((2, 5), np.float32))
    with pytest.raises(pj.ShapeError, match=r"Sequential layer 0 \(Conv\): .*rank-4 input, got shape \(2, 5\)"):
        nn.Sequential(nn.Conv2d(4, 3)).init(pj.random.key(0), np.ones((2, 5), np.float32))


# ---------------------------------------------------------------- metrics vs numpy
def _np_top_k_hits(logits, labels, k):
    """The documented tie rule: rank = #greater + #equal at lower indices; a hit when rank < k."""
    lab = logits[np.arange(len(labels)), labels][:, None]
    lower = np.arange(logits.shape[1])[None, :] < labels[:, None]
    rank = (logits > lab).sum(1) + ((logits == lab) & lower).sum(1)
    return rank < k


@pytest.mark.parametrize("ties", [False, True])
def test_accuracy_and_top_k_match_numpy(rng, ties):
    logits = rng.standard_normal((200, 7)).astype(np.float32)
    if ties:   # few distinct values: many tied maxima and tied k-th places
        logits = rng.integers(0, 3, (200, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 200).astype(np.int32)
    labels[:40] = np.argmax(logits[:40], 1)   # some correct rows
    want = np.mean(np.argmax(logits, 1) == labels)
    assert float(nn.accuracy(logits, labels)) == pytest.approx(want, abs=1e-6)
    assert float(pj.jit(nn.accuracy)(logits, labels)) == pytest.approx(want, abs=1e-6)
    for k in (1, 2, 3, 7):
        want_k = np.mean(_np_top_k_hits(logits, labels, k))
        assert float(nn.top_k_accuracy(logits, labels, k=k)) == pytest.approx(want_k, abs=1e-6), k
    assert float(nn.top_k_accuracy(logits, labels, k=1)) == pytest.approx(want, abs=1e-6)
    assert float(nn.top_k_accuracy(logits, labels, k=7)) == 1.0


def test_accuracy_over_extra_batch_axes_and_ties():
    logits = np.array([[[1, 3, 3], [2, 0, 2]], [[0, 0, 0], [5, 1, 4]]], np.float32)
    labels = np.array([[2, 0], [0, 2]], np.int32)
    assert float(nn.accuracy(logits, labels)) == 0.5      # tied rows count for the first max only
    assert float(nn.top_k_accuracy(logits, labels, k=2)) == 1.0
    assert float(nn.top_k_accuracy(np.array([[0, 0, 0]], np.float32), np.array([2], np.int32), k=2)) == 0.0


def test_metrics_reject_mismatched_labels(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(pj.ShapeError, match=r"accuracy: labels of shape \(4, 1\)"):
        nn.accuracy(logits, np.zeros((4, 1), np.int32))
    with pytest.raises(pj.ShapeError, match=r"top_k_accuracy: labels of shape \(3,\)"):
        nn.top_k_accuracy(logits, np.zeros(3, np.int32), k=2)
    with pytest.raises(ValueError, match="k=4"):
        nn.top_k_accuracy(logits, np.zeros(4, np.int32), k=4)


# ---------------------------------------------------------------- the batch iterator
def test_batches_in_order_last_batch_smaller():
    x, y = np.arange(23 * 2).reshape(23, 2), np.arange(23)
    out = list(train.batches((x, y), 5))
    assert [len(b[0]) for b in out] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in out]), y)
    for bx, by in out:
        np.testing.assert_array_equal(bx, x[by])


def test_batches_drop_last_drops_the_remainder():
    y = np.arange(23)
    out = list(train.batches((y,), 5, drop_last=True))
    assert [len(b[0]) for b in out] == [5, 5, 5, 5]
    assert [len(b[0]) for b in train.batches((y[:20],), 5, drop_last=True)] == [5] * 4
    assert list(train.batches((y[:4],), 5, drop_last=True)) == []


def test_batches_shuffle_is_a_seeded_permutation():
    x, y = np.arange(37 * 3).reshape(37, 3), np.arange(37)
    run = lambda seed, **kw: list(train.batches((x, y), 8, shuffle=True, seed=seed, **kw))
    a, b, c = run(4), run(4), run(5)
    order = np.concatenate([bt[1] for bt in a])
    assert sorted(order.tolist()) == list(range(37)) and not np.array_equal(order, y)
    assert [len(bt[1]) for bt in a] == [8, 8, 8, 8, 5]
    for (ax, ay), (bx, by) in zip(a, b):
        np.testing.assert_array_equal(ay, by)
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(ax, x[ay])   # aligned across arrays
    assert not np.array_equal(order, np.concatenate([bt[1] for bt in c]))
    dropped = np.concatenate([bt[1] for bt in run(4, drop_last=True)])
    np.testing.assert_array_equal(dropped, order[:32])   # drop_last keeps the same shuffled prefix
    assert len(set(dropped.tolist())) == 32


def test_batches_reject_misaligned_arrays():
    with pytest.raises(ValueError, match=r"different lengths \[4, 3\]"):
        list(train.batches((np.zeros(4), np.zeros(3)), 2))


# ---------------------------------------------------------------- fit with the progress bar
def test_fit_with_progress_bar_shows_loss_and_accuracy(capsys):
    pytest.importorskip("tqdm")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((48, 4)).astype(np.float32)
    y = (x[:, 1] > 0).astype(np.int32)
    model = nn.Sequential(nn.Linear(8), nn.relu, nn.Linear(2))
    opt = optim.adam(1e-2)
    state = train.init_train_state(model, opt, pj.random.key(0), x[:2])
    logged = []
    state, history = train.fit(train.classifier_step(model, opt), state, (x, y), epochs=2, batch_size=16,
                               progress=True, log=logged.append,
                               evaluate_fn=lambda s: train.evaluate(model, s, x, y))
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "loss=" in err and "acc=" in err
    assert "3/3" in err   # 48 // 16 batches per epoch
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert set(h) >= {"loss", "accuracy", "seconds", "test_loss", "test_accuracy"}
        assert np.isfinite(h["loss"]) and 0 <= h["accuracy"] <= 1
    assert int(state["step"]) == 6
    assert len(logged) == 2 and logged[1].startswith("epoch 2: loss")
    shown = [float(v) for v in __import__("re").findall(r"loss=([0-9.]+)", err)]
    assert history[-1]["loss"] == pytest.approx(shown[-1], abs=1e-4)   # the bar shows the epoch mean


def test_relu_has_derivative_zero_at_zero_and_keeps_nan():
    """As PyTorch and JAX define it (max's own rule would give 0.5 at the tie)."""
    x = np.array([-1.5, 0.0, -0.0, 2.0], np.float32)
    g = np.asarray(pj.grad(lambda x: nn.relu(x).sum())(x))
    np.testing.assert_array_equal(g, (x > 0).astype(np.float32))
    t, dt = pj.jvp(nn.relu, (x,), (np.full(4, 3.0, np.float32),))
    np.testing.assert_array_equal(np.asarray(dt), np.where(x > 0, 3.0, 0.0))
    assert np.isnan(np.asarray(nn.relu(np.array([np.nan], np.float32)))[0])
