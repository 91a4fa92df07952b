import os

import torch

os.environ.setdefault("REASONING_LAB_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The models in the unit tests are tiny: one thread is as fast as two and does not suffer when the cores
# are busy. REASONING_LAB_THREADS (which the Makefile also uses for the notebooks) overrides.
torch.set_num_threads(int(os.environ.get("REASONING_LAB_THREADS", "1")))


def pytest_addoption(parser):
    parser.addoption("--metrics-dir", default=None,
                     help="folder of <experiment>.json metrics from the notebook tests (tests/expectations.py)")
    parser.addoption("--nbcache-dir", default=None,
                     help="the book's execution cache the notebook tests filled (tests/expectations.py)")


def pytest_configure(config):
    config.addinivalue_line("markers", "grid: trains a chapter's defaults at every setting of a grid "
                                       "(minutes on two cores)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (full-size models on the CPU) run only with RUN_SLOW=1 (``make test-slow``)
    or when asked for with ``-m``; otherwise they are deselected."""
    if os.environ.get("RUN_SLOW", "") not in ("", "0") or config.getoption("markexpr", ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
