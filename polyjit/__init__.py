"""polyjit: a JAX-style tracing compiler that runs the same Python on any GPU or CPU."""
from .tracer import dtypes, tree_util
from .config import config
from .tracer.array import Array
from .tracer.core import ClosedJaxpr, ConcretizationError, Jaxpr, ShapedArray
from .tracer.jit import jit, make_jaxpr
from .tracer.primitives import ShapeError
from .backends import default_backend, device_put, devices, get_backend
from .autodiff import (checkpoint, custom_jvp, custom_vjp, float0, grad, hessian, jacfwd, jacrev,
                       jvp, linearize, remat, stop_gradient, value_and_grad, vjp, vmap)
from . import lax, numpy, random
from . import nn
from .nn import optim

__version__ = "0.1.0"
