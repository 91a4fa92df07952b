"""Library code of the reversal chapters: the set-up sequence, the schedule, figures and tables, and
the data design of the reversal fixes."""
from __future__ import annotations

from collections import defaultdict

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from reasoning_lab import experiments  # noqa: E402
from reasoning_lab.epochs import seed_runs  # noqa: E402
from reasoning_lab.studies.reversal import figures as fg  # noqa: E402
from reasoning_lab.studies.reversal import fixes as fx  # noqa: E402
from reasoning_lab.studies.reversal import runs  # noqa: E402
from reasoning_lab.studies.reversal import task as rv  # noqa: E402
from reasoning_lab.studies.reversal.in_context import make_reversal_icl_data  # noqa: E402

TINY = dict(seed=3, seeds=2, n_layers=1, n_heads=2, embed_dim=16, dropout=0.0, pos_encoding="absolute",
            tie_embeddings=False, freeze_embeddings=False, epochs=4, batch_size=16, lr=0.01,
            weight_decay=0.01, betas=[0.9, 0.999], loss_whole_sequence=False, word_size=1, max_len=0,
            strong_weight_decay=1.0, masked_epochs=2, masked_lr=0.003)


def _answers_after(seq, k: int) -> dict[tuple, dict[int, set[tuple]]]:
    """``{query entity: {relation token: {answers}}}`` of sentences ``X r Y`` with k-token entities."""
    out: dict[tuple, dict[int, set[tuple]]] = defaultdict(lambda: defaultdict(set))
    for row in seq.tokens.tolist():
        out[tuple(row[:k])][row[k]].add(tuple(row[k + 1:]))
    return out


@pytest.mark.parametrize("word_size", [1, 2])
def test_reversed_relations_make_the_relation_token_carry_the_answer(word_size):
    """The claim of the design: no training sentence states a held-out question; after the query entity
    of every held-out question, training gives two different answers under different relation tokens
    (so ignoring the relation token gives the right answer at most probability 1/2), the right answer
    only under the reversed-copy token of the trained direction; and for the pairs trained both ways
    the asked relation and that copy token always share their answer (what there is to transfer)."""
    d = rv.make_reversal_data(80, word_size, seed=1)
    k, v = word_size, d.vocab_size
    train, vocab = fx.training_set(d, "reversed_relations", word_size)
    assert vocab == v + 6
    assert not {tuple(r) for r in train.tokens.tolist()} & {tuple(r) for r in d.valid.tokens.tolist()}
    after = _answers_after(train, k)
    copy_of = {rv.FORWARD: v + 2, rv.BACKWARD: v + 3}      # the question's relation -> copy token
    trained_direction = {rv.FORWARD: rv.BACKWARD, rv.BACKWARD: rv.FORWARD}
    for row in d.valid.tokens.tolist():
        query, rel, answer = tuple(row[:k]), row[k], tuple(row[k + 1:])
        assert rel not in after[query]
        answers = {a for rels in after[query].values() for a in rels}
        assert answer in answers and len(answers) >= 2
        carriers = {r for r, a in after[query].items() if answer in a}
        # the reversed copy of the trained direction ("Bᵢ ← Aᵢ" held out: "Aᵢ → Bᵢ" trained, copy v+2)
        assert carriers == {copy_of[trained_direction[rel]]}
    for i in d.train_pairs.tolist():
        a, b = tuple(d.a[i].tolist()), tuple(d.b[i].tolist())
        assert after[b][rv.BACKWARD] == after[b][v + 2] == {a}
        assert after[a][rv.FORWARD] == after[a][v + 3] == {b}
        assert after[b][v + 1] != {a} and after[a][v] != {b}     # the second partner differs
    control, vocab = fx.training_set(d, "two_relations", word_size)
    assert vocab == v + 2 and len(control) == len(d.train) + 2 * d.n_pairs
    pairs = {(tuple(r[:k]), tuple(r[k + 1:])) for r in control.tokens[len(d.train):].tolist()}
    own = {(tuple(d.a[i].tolist()), tuple(d.b[i].tolist())) for i in range(d.n_pairs)}
    assert not pairs & (own | {(b, a) for a, b in own})


def test_reversed_under_new_tokens_refuses_unlisted_relations():
    d = rv.make_reversal_data(40, 1, seed=0)
    with pytest.raises(ValueError, match="relations"):
        fx.reversed_under_new_tokens(d.train, 1, torch.tensor([rv.FORWARD]), d.vocab_size)


def test_curse_schedule():
    assert runs.curse_schedule(1, "absolute") == runs.CURSE_SCHEDULE[1]["absolute"]
    assert runs.curse_schedule(2, "rotary", 7, 0.5) == (7, 0.5)
    assert runs.curse_schedule(3, "none", 9) == (9, runs.CURSE_SCHEDULE[3]["none"][1])
    assert runs.curse_schedule(1, "none") == (100, 0.01)       # the original's learning rate
    with pytest.raises(ValueError, match="word_size=4"):
        runs.curse_schedule(4, "absolute")
    with pytest.raises(ValueError, match="pos_encoding='alibi'"):
        runs.curse_schedule(1, "alibi")


def test_seed_runs_trains_every_seed_and_records_frames():
    make = lambda s: rv.make_reversal_data(40, 1, seed=s)
    fit = seed_runs(TINY, make, "cpu", record=lambda m, d: rv.logit_matrices(m, d), n_frames=2)
    assert len(fit.models) == 2 and fit.data[0].train.tokens.equal(make(3).train.tokens)
    assert [e for e, _ in fit.frames] == [2, 4]
    assert set(fit.frames[0][1]) == set(fg.GROUP_TITLES)
    means = fit.mean_last(*runs.FINAL_KEYS)
    assert means["valid_prob"] == pytest.approx(np.mean([h.last("valid_prob") for h in fit.histories]))
    one = seed_runs({**TINY, "seed": 4, "seeds": 1}, make, "cpu")      # seed 4 alone: the same run
    assert one.history["train_loss"] == pytest.approx(fit.histories[1]["train_loss"], abs=1e-5)
    icl = seed_runs({**TINY, "seeds": 1, "epochs": 1}, lambda s: make_reversal_icl_data(40, 10, 4, seed=s), "cpu")
    assert icl.model.cfg.vocab_size == icl.data[0].vocab_size
    with pytest.raises(ValueError, match="seeds=0"):
        seed_runs({**TINY, "seeds": 0}, make, "cpu")


def test_frames_survive_a_resumed_and_a_finished_run(tmp_path):
    """Frames live in the checkpoint: an interrupted run resumed, and a finished run loaded again, have
    every frame of an uninterrupted run."""
    make = lambda s: rv.make_reversal_data(40, 1, seed=s)
    record = lambda m, d: rv.logit_matrices(m, d)
    ckpt = tmp_path / "seeds.pt"
    straight = seed_runs(TINY, make, "cpu", record=record, n_frames=4)

    def stop(done, _h):
        if done == 5:                        # in epoch 3 of 4 (2 steps an epoch), after the epoch-2 save
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        seed_runs(TINY, make, "cpu", ckpt, record=record, n_frames=4, hooks=[stop], loop={"checkpoint_every": 2})
    resumed = seed_runs(TINY, make, "cpu", ckpt, record=record, n_frames=4)
    again = seed_runs(TINY, make, "cpu", ckpt, record=record, n_frames=4)
    assert resumed.histories[0].start_step == 4 and again.resumed().startswith("trained earlier")
    for run in (resumed, again):
        assert [e for e, _ in run.frames] == [e for e, _ in straight.frames] == [1, 2, 3, 4]
        for (_, a), (_, b) in zip(run.frames, straight.frames):
            assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
        assert run.histories[0].data == straight.histories[0].data


def test_figures_of_the_curse_chapter():
    d = rv.make_reversal_data(40, 1, seed=0)
    fit = seed_runs({**TINY, "seeds": 1}, lambda s: d, "cpu", record=lambda m, dd: rv.logit_matrices(m, dd))
    model = fit.model
    mats = rv.logit_matrices(model, d)
    fig = fg.heatmap_grid(mats, "title")
    assert len(fig.axes) == 8 and fig.axes[0].get_title() == fg.GROUP_TITLES["train_forward"]
    table = fg.diagonal_table({"relation": mats})
    assert table["diag_acc_relation_valid_unseen"] == (rv.diagonal_accuracy(mats["valid_unseen"]),
                                                      1 / len(mats["valid_unseen"]))
    ids = rv.embedding_token_ids(d)
    fig, stats = fg.cosine_figure(fit.extra["inits"][0], model.tok_emb.weight, ids)
    assert stats["cos_offdiag_std_theory"] == pytest.approx(1 / 4)
    init_cos = rv.off_diagonal(rv.cosine_matrix(fit.extra["inits"][0][ids]))
    assert stats["cos_offdiag_std_init"] == pytest.approx(float(init_cos.std()))
    xs = np.linspace(-3, 3, 6001)
    assert np.trapezoid(fg.gaussian_density(xs, 0.5), xs) == pytest.approx(1.0, abs=1e-4)
    assert "(0 = →, 1 = ←)" in fg.describe_data(d) and len(fg.describe_data(d).splitlines()) == 4
    html = fg.curse_player(fit.frames, fit.histories[0], d.n_pairs, 4)
    assert "<img" in html.data or "frames" in html.data


def test_attention_figure_draws_the_last_position():
    from reasoning_lab.model import attention_weights

    d = make_reversal_icl_data(40, 10, 4, seed=0)
    fit = seed_runs({**TINY, "seeds": 1, "n_layers": 2}, lambda s: d, "cpu")
    queries = d.valid.tokens[:, :-1]
    fig, att = fg.attention_figure(fit.model, queries, list("ab→c↔d"), "t")
    expected = attention_weights(fit.model, queries)[:, :, :, -1, :].mean(1)
    assert att.shape == (2, 2, 6) and torch.allclose(att, expected)
    assert torch.allclose(att.sum(-1), torch.ones(2, 2), atol=1e-5)
    assert len(fig.axes) == 4 and fig.axes[0].get_xticklabels()[2].get_text() == "2: →"
    with pytest.raises(ValueError, match="labels"):
        fg.attention_figure(fit.model, queries, ["x"], "t")


def test_method_table_glue_and_figure():
    datas = [rv.make_reversal_data(40, 1, seed=s) for s in (0, 1)]
    results = fx.train_methods({**TINY, "seed": 0, "epochs": 2, "methods": ["baseline", "tied"]},
                               lambda s: datas[s], "cpu")
    table = fg.method_table(results)
    assert table["valid"]["tied"][1] == results["tied"].histories[1].last("valid_prob")
    glued = fg.method_glue(table)
    assert glued["baseline_valid"] == pytest.approx(table["valid"]["baseline"].mean())
    assert glued["tied_valid_1"] == table["valid"]["tied"][1] and "tied_train" in glued
    text = fg.format_method_table(table, 0.1)
    assert len(text.splitlines()) == 4 and all(len(line) <= 88 for line in text.splitlines())
    fig = fg.fixes_figure(results, 0.1, 10)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["baseline", "tied"]
    from reasoning_lab import prose

    assert fg.glue_values(a=1.0) is None and prose.GLUED["a"] == 1.0   # no stray output in a cell
    lines = fx.describe_methods(datas[0], 1).splitlines()
    assert len(lines) == 3 and lines[0].strip().startswith("reversed_relations")
