import os

os.environ.setdefault("REASONING_LAB_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_addoption(parser):
    parser.addoption("--metrics-dir", default=None,
                     help="folder of <experiment>.json metrics from the notebook tests (tests/expectations.py)")

if os.environ.get("REASONING_LAB_THREADS"):
    import torch

    torch.set_num_threads(int(os.environ["REASONING_LAB_THREADS"]))
