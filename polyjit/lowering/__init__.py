"""Lowering: jaxprs to fused kernels (backend-independent), plus per-backend renderers.

  exprs.py       stage table: each primitive's output element as an expression
  fusion.py      which values get buffers; kernels as parallel x serial loop nests
  program.py     lower_to_kernels: ordered launches and host steps over buffer slots
  memory.py      liveness-based reuse of intermediate buffers
  linearize.py   kernel -> statements with loop-invariant values hoisted
  render_opencl.py  OpenCL C
"""
from .program import HOST_FALLBACK_PRIMS, CONTROL_FLOW_PRIMS, Program, lower_to_kernels

__all__ = ["HOST_FALLBACK_PRIMS", "CONTROL_FLOW_PRIMS", "Program", "lower_to_kernels"]
