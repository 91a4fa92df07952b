"""What the book claims about each default run, checked on the metrics the notebook tests produced.

Run by `make test` after nbval: ``pytest tests/expectations.py --metrics-dir _build/metrics``.
The claims are data on each experiment (``claims=`` in ``studies/<study>/experiment.py``); this file
only loops over the registry: every experiment must have written all of its declared metrics, and every
claim must hold on them.
"""
import json
from pathlib import Path

import pytest

from reasoning_lab import experiments


@pytest.fixture(scope="module")
def metrics_dir(request):
    path = request.config.getoption("--metrics-dir")
    if not path:
        pytest.skip("needs --metrics-dir (run through `make test`)")
    return Path(path)


@pytest.mark.parametrize("exp", experiments.available(), ids=lambda e: e.name)
def test_default_run(exp, metrics_dir):
    file = metrics_dir / f"{exp.name}.json"
    assert file.exists(), f"{exp.name}: the notebook did not record metrics"
    m = json.loads(file.read_text())
    missing = [k for k in exp.metrics if k not in m]
    assert not missing, f"{exp.name}: metrics missing {missing}"
    failures = [f for f in (claim.failure(m) for claim in exp.claims) if f]
    assert not failures, f"{exp.name}: " + "; ".join(failures)
