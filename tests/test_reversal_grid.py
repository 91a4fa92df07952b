"""The reversal-curse chapter's claim at every non-default setting: with the notebook's defaults and the
schedule it picks (:func:`runs.curse_schedule`), each positional encoding x entity length fits the
training sentences and stays at or below chance on the held-out reversed ones. One seed per cell,
trained by the experiment's own run (``Experiment.train``), as the notebook trains it. Slow (minutes on two cores): marked ``grid``,
so ``pytest -m "not grid"`` leaves it out; ``make test`` runs it."""
from __future__ import annotations

import pytest

from reasoning_lab import experiments


# every cell but the chapter's own setting (absolute positions, one-token entities), which the notebook
# test runs with all its seeds and tests/expectations.py checks
CELLS = [(pos, w) for w in (1, 2, 3) for pos in ("none", "absolute", "rotary") if (pos, w) != ("absolute", 1)]


@pytest.mark.grid
@pytest.mark.parametrize("pos, word_size", CELLS, ids=[f"{pos}-{w}" for pos, w in CELLS])
def test_curse_defaults_fit_and_show_the_curse(pos, word_size):
    exp = experiments.get("reversal-curse")
    p = exp.resolve("default", {"pos_encoding": pos, "word_size": word_size, "seeds": 1, "device": "cpu"})
    # evaluated once, at the end (the chapter's curves need ~30 evaluations; the claim needs one)
    m = exp.train(p, "cpu", eval_every=0).metrics
    assert m["train_prob"] >= 0.99, (pos, word_size, m["train_prob"])
    assert m["valid_prob"] <= m["chance_prob"], (pos, word_size, m["valid_prob"])
