"""`voxtral bench`: speed per stage on this machine, against its measured limits (SPEC §8).

run.py: a real transcription per device, the decode step profile against the bandwidth roofline, the
encoder against the GEMM rate; streams.py: streaming latency, batched steps, live-session ticks.
"""

from .run import BenchOptions, default_audio, run, table, write_json

__all__ = ["BenchOptions", "default_audio", "run", "table", "write_json"]
