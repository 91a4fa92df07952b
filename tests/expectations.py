"""What the book claims about each default run, checked on the metrics the notebook tests produced.

Run by `make test` after nbval: ``pytest tests/expectations.py --metrics-dir _build/metrics``.
Each experiment listed in SPEC with a default-run claim has a check here; every experiment must have
written all of its declared metrics.
"""
import json
from pathlib import Path

import pytest

from reasoning_lab import experiments


def _claims(name: str, m: dict) -> None:
    if name == "reversal-curse":
        assert m["train_prob"] >= 0.99 and m["valid_prob"] <= m["chance_prob"]
    elif name == "reversal-in-context":
        assert m["valid_prob"] >= 0.9
    elif name == "reversal-fixes":
        fixes = {k: v for k, v in m.items() if k.startswith("valid_prob_") and k != "valid_prob_baseline"}
        assert fixes and max(fixes.values()) >= 0.9, fixes
        assert m["valid_prob_baseline"] <= m["chance_prob"]
    elif name == "chain-of-thought":
        assert m["train_prob"] >= 0.99
        assert m["valid_prob"] <= 2 * m["chance_prob"] and m["valid_two_step_prob"] >= 0.9
    elif name == "chain-related-tokens":
        assert m["valid_prob"] >= 0.9
    elif name == "capacity":
        assert m["capacity_bits"] <= m["dataset_entropy_bits"]
    elif name == "bfs-handcrafted":
        assert m["mse"] <= 1e-9
    elif name == "shortest-paths":
        assert m["pretrain_loss"] * 10 <= m["label_variance"]
    elif name == "bilinear-dynamics":
        assert m["train_loss_ratio"] < m["reverse_loss_ratio"]
    elif name == "one-layer-dynamics":
        assert m["forward_weight"] > max(m["reverse_weight"], m["indirect_weight"])


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
    _claims(exp.name, m)
