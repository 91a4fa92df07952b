"""Timing shared by the benchmarks (each script runs on its own as ``python bench/<script>.py``)."""
import time


def rate(fn, seconds: float) -> float:
    """Items per second: call ``fn`` (which returns how many items it made) for about ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)
