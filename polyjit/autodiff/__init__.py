"""Transformations: vmap (batching), jvp/linearize/vjp/grad (autodiff), custom rules."""
from .batching import vmap
