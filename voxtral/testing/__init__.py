"""Random checkpoints in the official file format, for tests and benchmarks."""

from .checkpoint import SIZES, params, write_checkpoint

__all__ = ["SIZES", "params", "write_checkpoint"]
