"""polyjit.nn: neural-network building blocks (activations for now)."""
from .activations import (gelu, hard_swish, leaky_relu, log_softmax, logsumexp, one_hot, relu,
                          sigmoid, silu, softmax, tanh)
