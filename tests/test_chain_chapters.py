"""Library code of the chain chapters: the saved sweep and the numbers the prose states about it, the
per-seed table, the figures."""
from __future__ import annotations

import csv
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from reasoning_lab.experiments import ROOT  # noqa: E402
from reasoning_lab.studies.chain import figures as fg  # noqa: E402
from reasoning_lab.studies.chain import task as chain  # noqa: E402
from reasoning_lab.epochs import seed_runs  # noqa: E402
from reasoning_lab.studies.chain import runs as cr  # noqa: E402

TINY = dict(seed=0, seeds=2, n_layers=1, n_heads=2, embed_dim=16, dropout=0.0, pos_encoding="absolute",
            tie_embeddings=False, freeze_embeddings=False, epochs=3, batch_size=16, lr=0.01,
            weight_decay=0.01, betas=[0.9, 0.999], loss_whole_sequence=False)


def _raw_rows():
    with open(ROOT / "book" / "data" / "chain-sweep.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_load_sweep_reads_the_saved_csv():
    rows = fg.load_sweep()
    raw = _raw_rows()
    assert len(rows) == len(raw) == 9
    assert sorted(float(r["valid_two_step_prob"]) for r in raw) == sorted(r["valid_two_step_prob"]
                                                                          for r in rows)
    assert [(r["n_layers"], r["held_out_fraction"]) for r in rows] == sorted(
        (r["n_layers"], r["held_out_fraction"]) for r in rows)
    text = fg.format_sweep(rows)
    assert len(text.splitlines()) == 10 and max(map(len, text.splitlines())) <= 88


def test_load_sweep_refuses_an_empty_file(tmp_path):
    empty = tmp_path / "s.csv"
    empty.write_text("held_out_fraction,n_layers\n")
    with pytest.raises(ValueError, match="path="):
        fg.load_sweep(empty)


def test_sweep_prose_agrees_with_the_saved_run():
    """The chapter's sweep paragraph: the command it prints has the file's grid and budget columns, and
    what the glued facts claim in words holds for every row of the CSV."""
    rows = fg.load_sweep()
    facts = fg.sweep_facts(rows)
    text = (ROOT / "notebooks" / "chain-of-thought.md").read_text()
    grid = dict(re.findall(r"--grid (\w+)=([\d.,]+)", text))
    assert sorted(float(x) for x in grid["held_out_fraction"].split(",")) == sorted(
        {r["held_out_fraction"] for r in rows})
    assert sorted(int(x) for x in grid["n_layers"].split(",")) == sorted({int(r["n_layers"]) for r in rows})
    assert facts["n_runs"] == len(rows) == 9
    # "the direct probability stays below chance in every run"
    assert all(r["valid_prob"] < r["chance_prob"] for r in rows) and facts["direct_prob_max"] < facts["chance"]
    # "right ... time(s) in all the runs together": counts of right held-out chains
    n_valid = [round(r["held_out_fraction"] * 200) for r in rows]
    assert facts["direct_right"] == sum(round(r["valid_acc"] * n) for r, n in zip(rows, n_valid)) == 1
    assert facts["direct_max_acc"] <= 2 * facts["chance"]
    # "right on every held-out chain in N runs", and the weakest run is the one named
    assert facts["two_step_perfect"] == sum(r["valid_two_step_acc"] == 1 for r in rows) == 8
    weakest = min(rows, key=lambda r: r["valid_two_step_acc"])
    assert (facts["weakest_layers"], facts["weakest_fraction"]) == (4, 0.5)
    assert facts["weakest_train_prob"] == weakest["train_prob"] < 0.99
    assert facts["weakest_two_step_prob"] == weakest["valid_two_step_prob"]
    assert (facts["most_trained_ac"], facts["fewest_trained_ac"]) == (180, 20)
    # the text names no saved-run number of its own: every sweep number in it is glued
    paragraph = text[text.index("In all {eval}`sweep_n_runs`"):text.index("## Our results")]
    bare = re.findall(r"(?<![\w.`:])\d+\.\d+(?![\w`])", re.sub(r"\{eval\}`[^`]*`", "", paragraph))
    assert set(bare) <= {"0.1", "0.9"}, bare      # the grid's fractions, from the command above


def test_seed_table_uses_two_step_metrics():
    make = lambda s: chain.make_chain_data(40, 1, seed=s)
    fit = seed_runs(TINY, make, "cpu", extra_splits=cr.step_splits)
    table = cr.seed_table(fit.models, fit.data, fit.histories)
    for s, (m, d) in enumerate(zip(fit.models, fit.data)):
        ref = chain.two_step_metrics(m, d)
        assert table["two_step"][s] == ref["valid_two_step_prob"]
        assert table["direct"][s] == ref["valid_direct_prob"]
        assert table["step1"][s] == ref["valid_step1_prob"]
        assert table["direct_acc"][s] == fit.histories[s].last("valid_acc")
    # the step splits are the held-out triples' single steps, and the history evaluates them
    assert fit.histories[0].last("step1_prob") == pytest.approx(table["step1"][0], abs=1e-5)
    text = fg.format_seed_table(table, 0)
    assert text.splitlines()[0].split()[-1] == "mean" and len(text.splitlines()) == 7
    mean = {k: float(np.mean(v)) for k, v in table.items()}
    fig = fg.direct_vs_two_step_figure(mean, fit.data[0].chance_prob, fit.data[0].n_triples)
    assert fig.axes[0].get_ylabel() == "held-out triples, mean over seeds"
    d0, m0 = fit.data[0], fit.model
    maps = [chain.logit_maps(m0, d0, t, "query") for t in (d0.train_triples, d0.valid_triples)]
    fig = fg.logit_map_figure(*maps, "t")
    assert len(fig.axes) == 12
    p_b, p_c = fg.position0_probs(m0, d0)
    assert 0 < p_b < 1 and 0 < p_c < 1
    lines = fg.describe_chain(chain.make_chain_data(800, 3, seed=0)).splitlines()
    assert len(lines) == 7 and max(map(len, lines)) <= 88
    frames = [(e, chain.logit_maps(m0, d0, d0.valid_triples, "query")) for e in (1, 3)]
    assert "img" in fg.chain_player(frames, fit.histories[0], d0.n_triples, 3).data
    fig = fg.sweep_figure(fg.load_sweep())
    assert fig.axes[1].get_title() == "probability of the correct C on held-out chains"


def test_related_token_figures_and_unused_split():
    make = lambda s: chain.make_related_chain_data(40, 20, 8, 4, seed=s)
    d = make(0)
    assert set(cr.unused_split(d)) == {"unused"} and len(cr.unused_split(d)["unused"]) == 8
    assert cr.unused_split(chain.make_related_chain_data(40, 12, 8, 4, seed=0)) == {}
    fit = seed_runs(TINY, make, "cpu", extra_splits=cr.unused_split)
    assert "unused_prob" in fit.histories[0]
    fig = fg.first_token_vs_entity_figure(fit.histories, d.chance_prob)
    assert fig.axes[1].get_title() == "whole entity (z i)"
    fig = fg.unused_index_figure(fit.histories, d.chance_prob)
    assert len(fig.axes[0].get_lines()) >= 3
    text = fg.describe_related(chain.make_related_chain_data(80000, 60000, 200, 50, seed=0))
    assert "'x i ↝ z i'" in text and max(map(len, text.splitlines())) <= 88
