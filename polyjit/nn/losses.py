"""Losses (mean over the batch, as torch's default reduction) and metrics."""
from __future__ import annotations

from ..tracer import dtypes
from ..tracer.primitives import ShapeError
from .activations import log_softmax, one_hot


def _pnp():
    from .. import numpy as pnp
    return pnp


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    """Cross-entropy of logits (..., classes) with integer labels (...), as
    torch.nn.functional.cross_entropy(label_smoothing=...)."""
    pnp = _pnp()
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(f"softmax_cross_entropy: labels of shape {tuple(labels.shape)} do not "
                         f"match logits of shape {tuple(logits.shape)} (expected {tuple(logits.shape[:-1])})")
    if not dtypes.is_int(labels.dtype):
        raise TypeError(f"softmax_cross_entropy: labels must be integers, got {labels.dtype}")
    logp = log_softmax(logits, axis=-1)
    # the label's log-probability picked by a comparison, not a gather: its gradient is then
    # elementwise (a gather's is a scatter-add, which compiled backends run on the host)
    hit = one_hot(labels, logits.shape[-1], dtype=bool)
    nll = -pnp.sum(pnp.where(hit, logp, pnp.zeros((), logp.dtype)), axis=-1)
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * pnp.mean(logp, axis=-1)
    return pnp.mean(nll)


def binary_cross_entropy_with_logits(logits, targets):
    pnp = _pnp()
    # max(x, 0) - x*t + log(1 + exp(-|x|)) is stable for large |x|
    return pnp.mean(pnp.maximum(logits, 0) - logits * targets + pnp.log1p(pnp.exp(-pnp.abs(logits))))


def mse(pred, target):
    return _pnp().mean(_pnp().square(pred - target))


def l1(pred, target):
    return _pnp().mean(_pnp().abs(pred - target))


def huber(pred, target, delta=1.0):
    pnp = _pnp()
    err = pnp.abs(pred - target)
    return pnp.mean(pnp.where(err < delta, 0.5 * err * err, delta * (err - 0.5 * delta)))


def _check_labels(fn, logits, labels):
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(f"{fn}: labels of shape {tuple(labels.shape)} do not match logits of shape "
                         f"{tuple(logits.shape)} (expected {tuple(logits.shape[:-1])})")


def accuracy(logits, labels):
    """Fraction of rows whose argmax is the label; ties go to the lowest index (numpy's and
    torch's argmax), so a tied row counts only when the label is the first maximal class."""
    pnp = _pnp()
    logits, labels = pnp.asarray(logits), pnp.asarray(labels)
    _check_labels("accuracy", logits, labels)
    return pnp.mean((pnp.argmax(logits, axis=-1) == labels).astype("float32"))


def top_k_accuracy(logits, labels, k=5):
    """Fraction of rows whose label is among the k largest logits. Ties rank lower indices
    first: the label hits when (#logits greater) + (#equal logits at lower indices) < k."""
    pnp = _pnp()
    logits, labels = pnp.asarray(logits), pnp.asarray(labels)
    _check_labels("top_k_accuracy", logits, labels)
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"top_k_accuracy: k={k} must be in [1, {logits.shape[-1]}] for {logits.shape[-1]} classes")
    _, idx = pnp.top_k(logits, k)
    return pnp.mean(pnp.any(idx == labels[..., None], axis=-1).astype("float32"))
