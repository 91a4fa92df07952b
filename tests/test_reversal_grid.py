"""The reversal-curse chapter's claim at every non-default setting: with the notebook's defaults and the
schedule it picks (:func:`runs.curse_schedule`), each positional encoding x entity length fits the
training sentences and stays at or below chance on the held-out reversed ones. One seed per cell,
trained through the same library path as the notebook. Slow (minutes on two cores): marked ``grid``,
so ``pytest -m "not grid"`` leaves it out; ``make test`` runs it."""
from __future__ import annotations

import re

import pytest

from reasoning_lab.experiments import ROOT
from reasoning_lab.studies.reversal import runs
from reasoning_lab.studies.reversal import task as rv


def _notebook_defaults() -> dict:
    """The parameters cell of notebooks/reversal-curse.md, as the notebook starts with them."""
    text = (ROOT / "notebooks" / "reversal-curse.md").read_text()
    cell = re.search(r":tags: \[parameters\]\n(.*?)```", text, re.S).group(1)
    values: dict = {}
    exec(cell, {}, values)
    return values


# every cell but the chapter's own setting (absolute positions, one-token entities), which the notebook
# test runs with all its seeds and tests/expectations.py checks
CELLS = [(pos, w) for w in (1, 2, 3) for pos in ("none", "absolute", "rotary") if (pos, w) != ("absolute", 1)]


@pytest.mark.grid
@pytest.mark.parametrize("pos, word_size", CELLS, ids=[f"{pos}-{w}" for pos, w in CELLS])
def test_curse_defaults_fit_and_show_the_curse(pos, word_size):
    p = {**_notebook_defaults(), "pos_encoding": pos, "word_size": word_size, "seeds": 1}
    epochs, lr = runs.curse_schedule(word_size, pos, p["epochs"], p["lr"])
    make = lambda s: rv.make_reversal_data(p["vocab_size"], word_size, seed=s)
    # evaluated once, at the end (the chapter's curves need ~30 evaluations; the claim needs one)
    fit = runs.seed_runs(p, make, "cpu", epochs=epochs, lr=lr, eval_every=epochs)
    h = fit.histories[0]
    assert h.last("train_prob") >= 0.99, (pos, word_size, h.last("train_prob"))
    assert h.last("valid_prob") <= fit.data.chance_prob, (pos, word_size, h.last("valid_prob"))
