"""polyjit.nn: layers, initializers, losses, optimizers (`polyjit.optim`) and training utilities.

Layers are `Module`s with `init(key, example) -> (params, state)` and
`apply(params, state, x, *, train=False, key=None) -> (y, state)`; params and state are
plain pytrees, so `pj.grad`, `pj.jit` and the optimizers work on them directly.
"""
from . import initializers, losses, optim
from .activations import (gelu, hard_swish, leaky_relu, log_softmax, logsumexp, one_hot, relu,
                          sigmoid, silu, softmax, tanh)
from .layers import (AvgPool2d, BatchNorm, Conv, Conv1d, Conv2d, ConvTranspose2d, Dropout,
                     Embedding, Flatten, GlobalAvgPool, GroupNorm, LayerNorm, Linear, MaxPool2d,
                     Module, MultiHeadAttention, RMSNorm, Sequential, rope)
from .losses import (accuracy, binary_cross_entropy_with_logits, huber, l1, mse,
                     softmax_cross_entropy, top_k_accuracy)
