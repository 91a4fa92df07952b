"""Part III (knowledge capacity): profiles, questions, entropy formulas, sizing, the trainer, probes."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from reasoning_lab.studies.capacity import entropy as E
from reasoning_lab.studies.capacity import vocab as V
from reasoning_lab.studies.capacity.profiles import Profiles, generate_profiles, load_profiles_jsonl, save_profiles_jsonl
from reasoning_lab.studies.capacity.questions import HELDOUT_SETS, QuestionBank
from reasoning_lab.studies.capacity.sizing import config_for_budget, formula_count, llama_config, original_architecture
from reasoning_lab.studies.capacity import runs
from reasoning_lab.studies.capacity.train import AnswerLoss, question_losses, subject_bits, train_capacity
from reasoning_lab.model import Transformer, count_params
from reasoning_lab.train import LoopConfig


@pytest.fixture(scope="module")
def small():
    vocab = V.make_vocab(16, 32, 8, 8, 8, 20)
    profiles = generate_profiles(60, vocab, seed=3)
    return vocab, profiles, QuestionBank(profiles, seed=3)


# --- vocabulary and profiles --------------------------------------------------------------------------
def test_name_lists_are_fixed_prefixes_and_distinct():
    assert V.first_names(10) == V.first_names(500)[:10]
    assert len(set(V.first_names(5163))) == 5163 and len(set(V.last_names(20000))) == 20000
    assert V.cities(5) == V.cities(5) and len(set(V.universities(100))) == 100
    with pytest.raises(ValueError, match="n_first_names"):
        V.first_names(0)


def test_vocab_layout():
    v = V.make_vocab(4, 5, 3, 2, 6, 10, n_relations=17)
    assert v.n_names == 4 * 4 * 5 and v.n_dates == 10 * 12 * 28
    assert len(v) == 1 + 21 + 4 + 5 + 10 + 12 + 28 + 3 + 2 + 6
    assert v.tokens[v.offset["subject"] + 4] == "parent" and v.tokens[v.offset["subject"] + 20] == "evil twin"
    assert v.tokens[v.offset["month"]] == "01" and v.tokens[v.offset["day"] + 27] == "28"
    with pytest.raises(ValueError, match="relations=5"):
        V.make_vocab(n_relations=5)


def test_profiles_shapes_distinct_names_and_determinism(small):
    vocab, p, _ = small
    assert len(p) == 60 and p.relations.shape == (60, 4)
    names = {tuple(t) for t in p.name_tokens().tolist()}
    assert len(names) == 60
    assert int(p.relations.max()) < 60 and int(p.day.max()) <= 27 and int(p.month.max()) <= 11
    q = generate_profiles(60, vocab, seed=3)
    assert torch.equal(p.relations, q.relations) and torch.equal(p.first, q.first)
    assert not torch.equal(p.relations, generate_profiles(60, vocab, seed=4).relations)
    with pytest.raises(ValueError, match="distinct names"):
        generate_profiles(10, V.make_vocab(1, 2, 2, 2, 2, 2), seed=0)


def test_loader_reads_the_original_format(tmp_path):
    rels = V.RELATIONS[:4]
    people = ["Ann Bea Cole", "Dan Eve Ford", "Gus Hal Ives"]
    stamps = [-631152000000, "1984-02-29T00:00:00", "2001-07-31"]       # ms since 1970, ISO, ISO date
    rows = []
    for i, name in enumerate(people):
        row = {"name": name, "index": i, "birth_date": stamps[i], "birth_city": ["Oslo", "Lima", "Oslo"][i],
               "university": "U" + str(i % 2), "employer": "Acme", "bio": ""}
        for r, rel in enumerate(rels):
            j = (i + r + 1) % 3
            row[rel] = {"name": people[j], "index": j}
        rows.append(row)
    path = tmp_path / "profiles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    p = load_profiles_jsonl(path)
    assert len(p) == 3 and p.n_relations == 4
    assert [p.name(i) for i in range(3)] == people
    assert p.value(0, "birth_date") == "1950-01-01"
    assert p.value(1, "birth_date") == "1984-02-28"                  # day clamped to 28, as the original
    assert p.value(2, "birth_date") == "2001-07-28"
    assert p.value(2, "birth_city") == "Oslo" and p.value(1, "university") == "U1"
    assert p.value(0, "worst_enemy") == people[(0 + 3 + 1) % 3]
    assert p.vocab.first == ["Ann", "Bea", "Dan", "Eve", "Gus", "Hal"] and p.vocab.n_names == 6 * 6 * 3
    assert E.subject_entropies(p)["birth_city"] == 1.0


def test_generated_profiles_round_trip_through_the_file_format(tmp_path, small):
    _, p, _ = small
    save_profiles_jsonl(p, tmp_path / "p.jsonl")
    q = load_profiles_jsonl(tmp_path / "p.jsonl")
    assert all(q.name(i) == p.name(i) for i in range(len(p)))
    assert torch.equal(q.relations, p.relations)
    assert all(q.value(i, s) == p.value(i, s) for i in range(len(p)) for s in p.subjects)


# --- questions ----------------------------------------------------------------------------------------
def test_one_and_two_hop_questions_hold_the_right_answers(small):
    vocab, p, bank = small
    g = torch.Generator().manual_seed(0)
    one = bank.sample_one_hop(200, g)
    for i in range(0, 200, 7):
        s = int(one.subject[i])
        text = bank.text(one, i)
        idx = [j for j in range(len(p)) if text.startswith(f"Question: What was {p.name(j)}'s")][0]
        assert text.endswith("Answer: " + p.value(idx, p.subjects[s]))
        assert int(one.answer[i].sum()) == (1 if p.subjects[s] in ("birth_city", "university", "employer") else 3)
    two = bank.sample_two_hop(200, g)
    assert (two.hops == 2).all() and not two.answer[:, :5].any()
    for i in range(0, 200, 11):
        text = bank.text(two, i)
        idx = [j for j in range(len(p)) if text.startswith(f"Question: What was {p.name(j)}'s")][0]
        r = V.RELATIONS.index(vocab.tokens[int(two.tokens[i, 3])].replace(" ", "_"))
        bridge = int(p.relations[idx, r])
        assert text.endswith("Answer: " + p.value(bridge, p.subjects[int(two.subject[i])]))
    assert bank.text(one, 0).startswith("Question: What was ") and "'s " in bank.text(two, 0)


def test_mixed_batches_and_all_one_hop(small):
    _, p, bank = small
    g = torch.Generator().manual_seed(1)
    b = bank.sample(100, 1 / 1.1, g)
    assert int((b.hops == 2).sum()) == round(100 / 1.1) and b.tokens.shape == (100, 8)
    every = bank.all_one_hop()
    assert len(every) == len(p) * 8 and torch.equal(every.subject[:8], torch.arange(8))


def test_heldout_sets_are_excluded_from_training(small):
    _, p, bank = small
    h = bank.heldout
    assert int(h.triples.sum()) == int(0.1 * 60 * 4 * 8) and int(h.first_people.sum()) == int(0.02 * 60)
    g = torch.Generator().manual_seed(2)
    tr = bank.sample_two_hop(3000, g)
    person = tr.tokens[:, :3]
    pid = {tuple(t): i for i, t in enumerate(p.name_tokens().tolist())}
    pp = torch.tensor([pid[tuple(t)] for t in person.tolist()])
    r = tr.tokens[:, 3] - p.vocab.offset["subject"] - 4
    s = tr.subject
    member = h.membership(pp, r, s, p.relations[pp, r])
    for name in HELDOUT_SETS:
        assert not member[name].any(), name
    sets = bank.eval_sets(50, seed=0)
    assert set(sets) == {"train_onehop", "train_twohop", *(f"eval_{n}" for n in HELDOUT_SETS)}
    ev = sets["eval_second_subject"]
    assert (ev.subject == h.second_subject).all()


# --- entropy and capacity: formulas pinned to hand-computed values --------------------------------------
def test_selection_terms():
    assert E.selection_bits(4, 16, "optimal") == pytest.approx(4 * 4 - 4 * 2)
    assert E.selection_bits(4, 16, "enumerate") == pytest.approx(16.0)
    assert E.selection_bits(4, 16, "independent") == 0.0
    with pytest.raises(ValueError, match="scheme"):
        E.selection_bits(4, 16, "binomial")


def _tiny_profiles():
    """4 people; hand-countable values. Names: 2 first x 2 first x 2 last = 8 possible."""
    vocab = V.Vocab(first=["A", "B"], last=["X", "Y"], years=[1900, 1901], birth_city=["c0", "c1", "c2", "c3"],
                    university=["u0", "u1"], employer=["e0", "e1"], relations=V.RELATIONS[:4])
    t = lambda *x: torch.tensor(x)
    return Profiles(vocab, first=t(0, 0, 1, 1), middle=t(0, 1, 0, 1), last=t(0, 0, 1, 1),
                    year=t(0, 0, 1, 1), month=t(0, 0, 0, 5), day=t(0, 0, 3, 3),     # 3 distinct dates
                    birth_city=t(0, 1, 2, 3), university=t(0, 0, 0, 0), employer=t(0, 1, 0, 1),
                    relations=t([1, 2, 3, 0], [0, 0, 0, 0], [1, 1, 2, 2], [3, 2, 1, 0]))


def test_dataset_entropy_by_hand():
    p = _tiny_profiles()
    ent = E.dataset_entropy(p, "optimal")
    H = ent.H
    assert H["birth_date"] == pytest.approx(math.log2(3)) and H["birth_city"] == 2.0
    assert H["university"] == 0.0 and H["employer"] == 1.0
    # relation columns: parent {1,0,1,3} -> 3 distinct; child {2,0,1,2} -> 3; best_friend {3,0,2,1} -> 4;
    # worst_enemy {0,0,2,0} -> 2
    assert [H[r] for r in V.RELATIONS[:4]] == pytest.approx([math.log2(3), math.log2(3), 2.0, 1.0])
    D = 2 * 12 * 28
    assert ent.name_selection == pytest.approx(4 * 3 - 4 * 2)              # 4 log2 8 - 4 log2 4
    assert ent.date_selection == pytest.approx(3 * math.log2(D) - 3 * math.log2(3))
    per_profile = 3 * math.log2(3) + 2 + 0 + 1 + 2 + 1
    assert ent.one_hop == pytest.approx(4 * per_profile + 4 + 3 * math.log2(D / 3))
    assert sum(ent.by_subject().values()) == pytest.approx(ent.one_hop)
    enum = E.dataset_entropy(p, "enumerate")
    assert enum.name_selection == pytest.approx(12.0) and enum.date_selection == pytest.approx(3 * math.log2(D))
    ind = E.dataset_entropy(p, "independent")
    assert ind.selection == 0.0 and ind.H["parent"] == 3.0 and ind.H["birth_date"] == pytest.approx(math.log2(D))
    assert ent.two_hop("big-hash") == pytest.approx(4 * 4 * per_profile)
    assert ent.two_hop("optimal") == pytest.approx(4 * per_profile)
    assert ent.two_hop("2-hop-double") == pytest.approx(4 * (per_profile + 2 * math.log2(3) + 3))  # relations count twice


def test_capacity_formulas():
    ent = E.dataset_entropy(_tiny_profiles(), "optimal")
    zero = {s: 0.0 for s in ent.subjects}
    assert E.capacity(zero, ent) == pytest.approx(ent.one_hop)                 # perfect model: everything
    assert E.capacity(zero, ent, clamp=False) == pytest.approx(ent.one_hop)
    at_entropy = dict(ent.H)                                                   # knows the value sets only
    assert E.capacity(at_entropy, ent) == pytest.approx(ent.selection)
    hopeless = {s: 50.0 for s in ent.subjects}
    assert E.capacity(hopeless, ent) == 0.0
    assert E.capacity(hopeless, ent, clamp=False) == pytest.approx(4 * (ent.per_profile - 8 * 50) + ent.selection)
    # half-way between "any name" (3 bits) and the realized names on every relation: half the name term
    half = dict(ent.H)
    for r in ent.relations:
        half[r] = (3.0 + ent.H[r]) / 2
    by = E.capacity_by_subject(half, ent)
    assert sum(by[r] for r in ent.relations) == pytest.approx(ent.name_selection / 2)
    # one subject learned: birth city (2 bits) at 0.5 bits -> 4 * 1.5 bits
    one = {s: 50.0 for s in ent.subjects}
    one["birth_city"] = 0.5
    assert E.capacity(one, ent) == pytest.approx(6.0)


def test_two_hop_schemes_and_per_hop_inversion():
    assert E.per_hop_loss(0.0, 2.0) == pytest.approx(0.0)
    assert E.per_hop_loss(2.0, 2.0) == pytest.approx(2.0)
    assert E.per_hop_loss(5.0, 2.0) == pytest.approx(2.0)                      # worse than chance: nothing
    p_y = 0.5 ** 2 + 0.5 / 4                                                   # p_x = 1/2, n = 4
    assert E.per_hop_loss(-math.log2(p_y), 2.0) == pytest.approx(1.0)
    ent = E.dataset_entropy(_tiny_profiles(), "optimal")
    zero = {s: 0.0 for s in ent.subjects}
    for scheme in E.TWO_HOP_SCHEMES:
        assert E.two_hop_capacity(zero, ent, scheme) == pytest.approx(ent.two_hop(scheme))
    loss = {"birth_city": 1.0}
    assert E.two_hop_capacity(loss, ent, "big-hash") == pytest.approx(4 * 4 * 1.0)
    assert E.two_hop_capacity(loss, ent, "optimal") == pytest.approx(4 * 1.0)


def test_capacity_never_exceeds_the_dataset_entropy(small):
    _, p, _ = small
    g = torch.Generator().manual_seed(0)
    for scheme in E.NAME_SCHEMES:
        ent = E.dataset_entropy(p, scheme)
        for _ in range(50):
            losses = {s: float(torch.rand((), generator=g)) * 2 * ent.H[s] for s in ent.subjects}
            for clamp in (True, False):
                assert E.capacity(losses, ent, clamp) <= ent.one_hop + 1e-6
            for s2 in E.TWO_HOP_SCHEMES:
                assert 0 <= E.two_hop_capacity(losses, ent, s2) <= ent.two_hop(s2) + 1e-6


# --- sizing --------------------------------------------------------------------------------------------
def test_original_rule_and_exact_counts():
    assert original_architecture(500_000, 4)["d_model"] == 48 and original_architecture(500_000, 4)["n_heads"] == 3
    assert original_architecture(1_000_000, 4)["d_model"] == 112
    assert original_architecture(2_000_000, 12)["d_model"] == 96
    cfg = llama_config(112, 4, 3000)
    model = Transformer(cfg)
    body = count_params(cfg)["non_embedding"]
    assert model.num_params() == count_params(cfg)["total"] == pytest.approx(1.48e6, rel=0.01)    # note's table
    assert body / (12 * 4 * 112 ** 2) == pytest.approx(4 / 3, rel=0.01)       # SwiGLU: 16h^2, not 12h^2
    assert formula_count(cfg) < model.num_params()
    c = config_for_budget(70_000, 2, 533)
    assert count_params(c)["total"] <= 70_000 < count_params(llama_config(c.d_model + 16, 2, 533))["total"]
    assert c.arch == "llama" and c.pos_encoding == "rotary" and not c.tie_embeddings
    with pytest.raises(ValueError, match="budget"):
        config_for_budget(1000, 2, 533)


# --- training -----------------------------------------------------------------------------------------
def _tiny_run(bank, steps, ckpt=None, every=0, two_hop=False):
    torch.manual_seed(0)
    model = Transformer(llama_config(16, 1, len(bank.profiles.vocab)))
    loop = LoopConfig(steps=steps, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), schedule="cosine",
                      warmup_steps=max(1, steps // 50), grad_clip=1.0, eval_every=max(1, steps // 4),
                      checkpoint_path=ckpt, checkpoint_every=every, progress=False)
    return model, train_capacity(model, bank, loop, 128, seed=0, two_hop=two_hop, eval_questions=64)


@pytest.mark.parametrize("two_hop_fraction", [0.0, 0.5])
def test_answer_loss_matches_the_full_forward_pass(small, two_hop_fraction):
    _, _, bank = small
    torch.manual_seed(1)
    model = Transformer(llama_config(32, 2, len(bank.profiles.vocab)))
    batch = bank.sample(64, two_hop_fraction, torch.Generator().manual_seed(2))
    logits = model(batch.tokens[:, :-1])            # every position, no shortcuts
    mask = batch.answer[:, 1:]
    reference = F.cross_entropy(logits[mask], batch.tokens[:, 1:][mask], reduction="sum") / len(batch)
    fast = AnswerLoss(model)(batch.tokens, batch.answer)
    assert fast.item() == pytest.approx(reference.item(), rel=1e-5)
    per_question, _ = question_losses(model, batch)
    assert per_question.mean().item() == pytest.approx(reference.item(), rel=1e-5)


def test_models_trained_in_worker_processes_match_serial_training(tmp_path):
    """The capacity run with workers > 1 trains its models in processes; each ends as when trained alone."""
    from reasoning_lab import experiments

    exp = experiments.get("capacity")
    p = exp.resolve("default", {"n_profiles": 60, "budgets": [25_000, 32_000], "exposures": 2, "batch_size": 64,
                                "n_layers": 1})
    serial = exp.train(p, torch.device("cpu"), progress=False)
    parallel = exp.train({**p, "workers": 2}, torch.device("cpu"))
    for m1, m2, r1, r2 in zip(serial.models, parallel.models, serial.histories, parallel.histories):
        assert m1.num_params() == m2.num_params()
        assert r2["train_onehop_loss"] == pytest.approx(r1["train_onehop_loss"], rel=1e-5)
        for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6)
    assert serial.metrics == pytest.approx(parallel.metrics, rel=1e-5)


def test_training_learns_and_reports_exposures(small):
    _, p, bank = small
    model, res = _tiny_run(bank, 80, two_hop=True)
    loss = res["train_onehop_loss"]
    assert loss[-1] < 0.7 * loss[0]
    assert res["exposures"][-1] == pytest.approx(80 * (128 - round(128 / 1.1)) / (60 * 8))
    ent = E.dataset_entropy(p)
    cap = E.capacity(subject_bits(res, "train_onehop", bank.subjects), ent)
    assert 0 < cap <= ent.one_hop
    assert "eval_triples_loss" in res.final and "train_twohop_bits_parent" in res.final


def test_interrupted_training_resumes_to_the_same_result(small, tmp_path, monkeypatch):
    _, _, bank = small
    _, straight = _tiny_run(bank, 40)
    ckpt = tmp_path / "c.pt"
    calls = {"n": 0}
    original = bank.sample

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 27:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(bank, "sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(bank, 40, ckpt=ckpt, every=10)
    monkeypatch.setattr(bank, "sample", original)
    assert ckpt.exists()
    _, resumed = _tiny_run(bank, 40, ckpt=ckpt, every=10)
    assert resumed.final["train_onehop_loss"] == pytest.approx(straight.final["train_onehop_loss"], rel=1e-6)


def test_saved_seeds_take_only_saved_runs_with_the_same_parameters(tmp_path):
    import json

    from reasoning_lab import experiments
    from reasoning_lab.studies.capacity import report
    from reasoning_lab.io import write_csv

    p = dict(experiments.get("capacity").resolve("default"))
    row = {"params": 100, "non_embedding_params": 50, "capacity_bits": 20.0, "bits_per_param": 0.2}
    for seed, lr in ((1, p["lr"]), (2, p["lr"] * 2)):
        d = tmp_path / f"capacity-default-seed{seed}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps({**p, "seed": seed, "lr": lr}))
        write_csv(d / "models.csv", [row])
    live = [{**row, "capacity_bits": 10.0, "bits_per_param": 0.1}]
    out = report.saved_seeds(tmp_path, live, p)
    assert out["seeds"] == [0, 1] and out["bpp"] == [0.1, 0.2]
    assert out["default_bpp_range"] == "0.100–0.200" and out["bpp_body"] == [0.2, 0.4]
    # a run saved before the optimiser parameters existed ran with the trainer's defaults
    d = tmp_path / "capacity-default-seed3"
    d.mkdir()
    (d / "params.json").write_text(json.dumps({k: v for k, v in {**p, "seed": 3}.items()
                                               if k not in ("betas", "schedule", "warmup_steps")}))
    write_csv(d / "models.csv", [row])
    assert report.saved_seeds(tmp_path, live, p)["seeds"] == [0, 1, 3]
    assert report.saved_seeds(tmp_path, live, {**p, "betas": [0.99, 0.999]})["seeds"] == [0]
