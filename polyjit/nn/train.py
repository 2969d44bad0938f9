"""Training utilities: batching, a jitted classifier step, `fit`, evaluation, checkpoints.

A training state is a plain dict pytree {"params", "model_state", "opt_state", "step"}, so
one jitted function updates it and one safetensors file holds it.
"""
from __future__ import annotations

import json
import time

import numpy as np

from .. import random
from ..tracer.jit import jit
from ..tracer.tree_util import tree_flatten_with_path, tree_unflatten
from . import losses
from .optim import apply_updates


def batches(arrays, batch_size, *, shuffle=False, seed=0, drop_last=False):
    """Yield tuples of aligned slices of numpy arrays; the order depends only on `seed`."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"batches: arrays have different lengths {[len(a) for a in arrays]}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield tuple(a[idx] for a in arrays)


def init_train_state(model, optimizer, key, example):
    params, model_state = model.init(key, example)
    return {"params": params, "model_state": model_state, "opt_state": optimizer.init(params),
            "step": np.int32(0)}


def classifier_step(model, optimizer, loss=losses.softmax_cross_entropy, seed=0):
    """A jitted `step(state, x, y) -> (state, {"loss", "accuracy"})`; dropout keys derive
    from (seed, step) so a resumed run repeats the same randomness."""
    from ..autodiff import value_and_grad

    def loss_fn(params, model_state, x, y, key):
        logits, new_state = model.apply(params, model_state, x, train=True, key=key)
        return loss(logits, y), (new_state, losses.accuracy(logits, y))

    def step(state, x, y):
        key = random.fold_in(random.key(seed), state["step"])
        (value, (model_state, acc)), grads = value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["model_state"], x, y, key)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new = {"params": apply_updates(state["params"], updates), "model_state": model_state,
               "opt_state": opt_state, "step": state["step"] + 1}
        return new, {"loss": value, "accuracy": acc}
    return jit(step)


def evaluate(model, state, x, y, batch_size=500):
    """Mean loss and accuracy of a classifier in eval mode."""
    @jit
    def metrics(params, model_state, xb, yb):
        logits, _ = model.apply(params, model_state, xb, train=False)
        return losses.softmax_cross_entropy(logits, yb), losses.accuracy(logits, yb)
    tot_loss = tot_acc = 0.0
    for xb, yb in batches((x, y), batch_size):
        l, a = metrics(state["params"], state["model_state"], xb, yb)
        tot_loss += float(l) * len(xb)
        tot_acc += float(a) * len(xb)
    return tot_loss / len(x), tot_acc / len(x)


def fit(step, state, train, *, epochs, batch_size, seed=0, evaluate_fn=None, checkpoint=None,
        start_epoch=0, progress=True, log=print, augment=None):
    """Run epochs of `step` over shuffled batches of `train` = (x, y); returns (state, history).
    With `checkpoint`, the state is saved after every epoch; pass `start_epoch` to resume.
    `augment(xb, rng) -> xb` transforms each training batch; its numpy Generator is seeded
    by (seed, epoch), so a resumed run sees the same augmented batches."""
    history = []
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        bar = _progress(len(train[0]) // batch_size, f"epoch {epoch + 1}/{epochs}", progress)
        loss_sum = acc_sum = 0.0
        n = 0
        aug_rng = np.random.default_rng([seed, epoch])
        for xb, yb in batches(train, batch_size, shuffle=True, seed=seed * 100003 + epoch,
                              drop_last=True):
            if augment is not None:
                xb = augment(xb, aug_rng)
            state, m = step(state, xb, yb)
            loss_sum, acc_sum, n = loss_sum + float(m["loss"]), acc_sum + float(m["accuracy"]), n + 1
            if bar is not None:   # count first: set_postfix redraws, so the bar ends at n/n
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{acc_sum / n:.4f}")
        if bar is not None:
            bar.close()
        rec = {"epoch": epoch + 1, "loss": loss_sum / max(n, 1), "accuracy": acc_sum / max(n, 1),
               "seconds": time.perf_counter() - t0}
        if evaluate_fn is not None:
            rec["test_loss"], rec["test_accuracy"] = evaluate_fn(state)
        history.append(rec)
        log("epoch {epoch}: loss {loss:.4f} train acc {accuracy:.4f}".format(**rec)
            + (" test loss {test_loss:.4f} test acc {test_accuracy:.4f}".format(**rec)
               if "test_accuracy" in rec else "") + f" ({rec['seconds']:.1f} s)")
        if checkpoint is not None:
            save_checkpoint(checkpoint, state, {"epoch": epoch + 1})
    return state, history


def _progress(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False)


def save_checkpoint(path, tree, metadata=None):
    """Save every array leaf of a pytree to safetensors, keyed by its path."""
    from safetensors.numpy import save_file
    leaves, _ = tree_flatten_with_path(tree)
    # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
    tensors = {p or "root": np.array(v, order="C") for p, v in leaves if v is not None}
    save_file(tensors, str(path), metadata={"polyjit": json.dumps(metadata or {})})


def load_checkpoint(path, template):
    """Fill `template`'s structure from a checkpoint; (tree, metadata). Names every missing,
    unexpected or reshaped parameter when the architectures differ."""
    from safetensors import safe_open
    leaves, treedef = tree_flatten_with_path(template)
    with safe_open(str(path), framework="numpy") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads((f.metadata() or {}).get("polyjit", "{}"))
    want = {p or "root": v for p, v in leaves if v is not None}
    missing = sorted(set(want) - set(saved))
    extra = sorted(set(saved) - set(want))
    reshaped = [f"{k}: checkpoint {saved[k].shape} {saved[k].dtype} vs model "
                f"{tuple(np.shape(want[k]))} {np.asarray(want[k]).dtype}" for k in sorted(set(want) & set(saved))
                if saved[k].shape != tuple(np.shape(want[k])) or saved[k].dtype != np.asarray(want[k]).dtype]
    if missing or extra or reshaped:
        raise ValueError(f"checkpoint {path} does not match the model: missing {missing}, "
                         f"unexpected {extra}, mismatched {reshaped}")
    return tree_unflatten(treedef, [saved[p or "root"] if v is not None else None for p, v in leaves]), meta
