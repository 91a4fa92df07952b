import os

import pytest
import torch

os.environ.setdefault("REASONING_LAB_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The models in the unit tests are tiny: one thread is as fast as two and does not suffer when the cores
# are busy. REASONING_LAB_THREADS (which the Makefile also uses for the notebooks) overrides.
torch.set_num_threads(int(os.environ.get("REASONING_LAB_THREADS", "1")))


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test draws are closed after it, so that a worker does not accumulate them."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def pytest_addoption(parser):
    parser.addoption("--metrics-dir", default=None,
                     help="folder of <experiment>.json metrics from the notebook tests (tests/expectations.py)")
    parser.addoption("--nbcache-dir", default=None,
                     help="the book's execution cache the notebook tests filled (tests/expectations.py)")


def pytest_configure(config):
    config.addinivalue_line("markers", "grid: trains a chapter's defaults at every setting of a grid "
                                       "(minutes on two cores)")


# Seconds of the longest tests (three workers on an idle 2-vCPU machine, 2 December 2026). Only their
# order matters: they start first, longest first, dealt out one at a time (:func:`_longest_first`), so
# that the workers do not end with one of them running alone while the others idle. Keys are node-id
# prefixes; other tests keep their order.
LONGEST = {
    "test_reversal_grid.py::test_curse_defaults_fit_and_show_the_curse[absolute-3]": 86,
    "test_reversal_grid.py::test_curse_defaults_fit_and_show_the_curse[none-3]": 79,
    "test_sweep_slurm.py::test_slurm_sweep": 52,
    "test_reversal_grid.py::test_curse_defaults_fit_and_show_the_curse[rotary-3]": 51,
    "test_reversal_grid.py::test_curse_defaults_fit_and_show_the_curse[absolute-2]": 44,
    "test_sweep_slurm.py::test_train_ddp": 43, "test_sweep.py::test_failed_point": 39,
    "test_reversal_grid.py::test_curse_defaults_fit_and_show_the_curse[rotary-2]": 38,
    "test_reversal_grid.py::test_curse_defaults_fit_and_show_the_curse[none-2]": 37,
    "test_sweep.py::test_interrupted_sweep": 30, "test_lab.py::": 100, "test_packaging.py::test_regular_install": 150,
    "test_gpu_check.py::test_cpu_mode": 20, "test_cli.py::test_run_writes_metrics": 19,
    "test_reversal_grid.py::": 15, "test_capacity.py::test_models_trained_in_worker": 15,
    "test_execute_notebooks.py::": 12, "test_ensemble.py::test_compiled": 10, "test_theory.py::test_theory_figures": 8,
}


def _expected_seconds(item) -> float:
    node = item.nodeid.split("/")[-1]
    return max((s for prefix, s in LONGEST.items() if node.startswith(prefix)), default=0.0)


def _longest_first(items) -> None:
    """The tests of :data:`LONGEST` first, longest first, the others after them in their own order; but
    each of the first ``workers`` long tests is followed by a short one. xdist (``--dist load
    --maxschedchunk 1``) gives each worker two tests to begin with and then one more whenever it has
    one left, so a worker starts on one long test and one short test, not on two long ones."""
    long = sorted((i for i in items if _expected_seconds(i) > 0), key=lambda i: -_expected_seconds(i))
    short = [i for i in items if _expected_seconds(i) == 0]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    head = [t for pair in zip(long[:workers], short[:workers]) for t in pair]
    items[:] = head + long[len(head) // 2:] + short[len(head) // 2:]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (full-size models on the CPU) run only with RUN_SLOW=1 (``make test-slow``)
    or when asked for with ``-m``; otherwise they are deselected. The longest tests go first
    (:func:`_longest_first`)."""
    if os.environ.get("RUN_SLOW", "") in ("", "0") and not config.getoption("markexpr", ""):
        slow = [item for item in items if item.get_closest_marker("slow") is not None]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if item.get_closest_marker("slow") is None]
    _longest_first(items)
