"""Transformations: jvp, linearize, vjp, grad (autodiff) and vmap (batching), all composable.

Import order registers every rule table: jvp (forward rules), transpose, control flow,
custom rules; api then builds the user-facing functions on them.
"""
from . import jvp as _jvp, transpose as _transpose, control_flow as _control_flow  # noqa: F401
from .ad_util import float0
from .api import grad, hessian, jacfwd, jacrev, jvp, linearize, value_and_grad, vjp
from .batching import vmap
from .custom import checkpoint, custom_jvp, custom_vjp, remat, stop_gradient
