"""Global compiler settings: `pj.config.matmul_precision = "tf32"`.

matmul_precision
    "highest" (default): float32 matrix products are exact float32 arithmetic (FMA).
    "tf32": float32 matrix products may round their inputs to TensorFloat-32 (10-bit
    mantissa) and run on tensor cores, accumulating in float32 (CUDA backend on
    Ampere or newer; other backends compute exactly). The setting is read when a
    program is lowered, so set it before the first call of a jitted function.
"""
from __future__ import annotations

MATMUL_PRECISIONS = ("highest", "tf32")


class Config:
    __slots__ = ("_matmul_precision",)

    def __init__(self):
        self._matmul_precision = "highest"

    @property
    def matmul_precision(self) -> str:
        return self._matmul_precision

    @matmul_precision.setter
    def matmul_precision(self, value):
        if not isinstance(value, str) or value.lower() not in MATMUL_PRECISIONS:
            raise ValueError(f"pj.config.matmul_precision must be one of "
                             f"{', '.join(map(repr, MATMUL_PRECISIONS))}; got {value!r}")
        self._matmul_precision = value.lower()

    def __repr__(self):
        return f"Config(matmul_precision={self._matmul_precision!r})"


config = Config()
