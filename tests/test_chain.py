"""Chain data, the loss flag, the two-step (chain-of-thought) evaluation and the logit maps."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reasoning_lab as lab
from reasoning_lab.epochs import epoch_loop, train_one
from reasoning_lab.model import ModelConfig, Transformer
from reasoning_lab.studies.chain import task as chain
from reasoning_lab.studies.chain.task import DIRECT, INDIRECT


def _rows(seq_data) -> set:
    return {tuple(r) for r in seq_data.tokens.tolist()}


def test_chain_split_sizes_and_disjointness():
    data = chain.make_chain_data(800, 1, seed=3, held_out_fraction=0.3)
    assert data.n_triples == 200 and len(data.train_triples) == 140 and len(data.valid_triples) == 60
    assert len(data.train) == 200 + 200 + 140 and len(data.valid) == 60          # the original's 540 / 60
    assert data.vocab_size == 802 and data.chance_prob == pytest.approx(1 / 200)
    # the three alphabets are disjoint and avoid the relation tokens
    a, b, c = (set(t.flatten().tolist()) for t in (data.a, data.b, data.c))
    assert len(a) == len(b) == len(c) == 200
    assert not (a & b) and not (b & c) and not (a & c) and min(a | b | c) >= 2
    # the triples split into two disjoint sets covering everything
    tr, va = set(data.train_triples.tolist()), set(data.valid_triples.tolist())
    assert not (tr & va) and tr | va == set(range(200))
    # held-out A ↝ C never in training; their two single steps are
    train_rows = _rows(data.train)
    assert not (_rows(data.valid) & train_rows)
    assert _rows(data.sentences("ab", data.valid_triples)) <= train_rows
    assert _rows(data.sentences("bc", data.valid_triples)) <= train_rows
    assert _rows(data.sentences("ac", data.train_triples)) <= train_rows
    # sentence layout: A → B, answer mask on the last entity
    row = data.sentences("ac", data.valid_triples[:1])
    i = int(data.valid_triples[0])
    assert row.tokens[0].tolist() == [int(data.a[i, 0]), INDIRECT, int(data.c[i, 0])]
    assert row.answer[0].tolist() == [False, False, True]


def test_chain_data_is_deterministic_and_word_size_two():
    d1 = chain.make_chain_data(80, 2, seed=1, held_out_fraction=0.5)
    d2 = chain.make_chain_data(80, 2, seed=1, held_out_fraction=0.5)
    assert torch.equal(d1.train.tokens, d2.train.tokens) and torch.equal(d1.valid.tokens, d2.valid.tokens)
    assert d1.n_triples == 40 and len(d1.valid_triples) == 20 and d1.train.tokens.shape[1] == 5
    assert len({tuple(r) for r in d1.a.tolist()}) == 40                         # distinct entities
    with pytest.raises(ValueError, match="held_out_fraction"):
        chain.make_chain_data(800, 1, held_out_fraction=0.001)


def test_parameter_checks():
    exp = lab.experiments.get("chain-of-thought")
    with pytest.raises(ValueError, match="held_out_fraction"):
        exp.resolve("default", {"held_out_fraction": 1.0})
    with pytest.raises(ValueError, match="held_out_fraction"):
        exp.resolve("default", {"held_out_fraction": 0})
    rel = lab.experiments.get("chain-related-tokens")
    with pytest.raises(ValueError, match="n_train"):
        rel.resolve("default", {"n_train": 590})
    with pytest.raises(ValueError, match="id_pool"):
        rel.resolve("default", {"id_pool": 799})


def test_loss_flag_switches_the_loss():
    """``loss_whole_sequence`` reaches the training loop and changes what is optimised."""
    data = chain.make_chain_data(40, 1, seed=0)
    losses, heads = {}, {}
    for flag in (False, True):
        p = dict(epochs=1, batch_size=len(data.train), lr=1e-3, weight_decay=0.0,
                 loss_whole_sequence=flag, n_layers=1, n_heads=1, embed_dim=8)
        loop = epoch_loop(p, len(data.train), "cpu", progress=False)
        torch.manual_seed(0)
        model = lab.model_from_params(p, data.vocab_size, max_len=3)
        with torch.no_grad():
            logp = F.log_softmax(model(data.train.tokens[:, :-1]), -1)
        nll = -logp.gather(-1, data.train.tokens[:, 1:, None]).squeeze(-1)
        expected = nll.mean() if flag else nll[:, 1].mean()                      # all positions vs the answer
        h = train_one(model, data.train, loop, p["batch_size"], 0, {}, whole_sequence=p["loss_whole_sequence"])
        losses[flag] = h.last("train_loss")
        assert losses[flag] == pytest.approx(expected.item(), rel=1e-5)         # one full batch: loss at init
        heads[flag] = model.head.weight.detach().clone()
    # only the whole-sequence loss trains the relation-token outputs after the first entity
    rel = [DIRECT, INDIRECT]
    assert not torch.allclose(heads[True][rel], heads[False][rel])
    assert losses[True] != losses[False]


class TableModel(nn.Module):
    """Hand-built 'transformer': the next-token logits depend on the last two tokens via a lookup table."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.table = nn.Parameter(torch.zeros(vocab + 1, vocab, vocab))   # [previous (+pad), current, next]

    def set(self, prev: int, cur: int, probs: dict[int, float]):
        """Next-token distribution after (prev, cur): the given probabilities, the rest spread evenly."""
        rest = (1 - sum(probs.values())) / (self.vocab - len(probs))
        row = torch.full((self.vocab,), math.log(rest))
        for t, q in probs.items():
            row[t] = math.log(q)
        with torch.no_grad():
            self.table[prev, cur] = row

    def forward(self, tokens):
        prev = torch.cat([torch.full_like(tokens[:, :1], self.vocab), tokens[:, :-1]], 1)
        return self.table[prev, tokens]


def test_two_step_on_a_hand_built_model():
    V = 10
    a, b, c = torch.tensor([[2], [3]]), torch.tensor([[4], [5]]), torch.tensor([[6], [7]])
    m = TableModel(V)
    m.set(2, DIRECT, {4: 0.9})              # triple 0: A → B right with 0.9
    m.set(4, DIRECT, {6: 0.8})              #           B → C right with 0.8
    m.set(3, DIRECT, {4: 0.6, 5: 0.3})      # triple 1: the model's greedy B̂ is the wrong B (4)
    m.set(5, DIRECT, {7: 0.95})
    m.set(2, INDIRECT, {6: 0.2})            # direct answers
    m.set(3, INDIRECT, {7: 0.1})
    r = chain.two_step(m, a, b, c)
    assert r["b_hat"].tolist() == [[4], [4]]
    assert r["logp_b"].exp().tolist() == pytest.approx([0.9, 0.3])
    rest = (1 - 0.8) / (V - 1)              # p(C = 7 | B̂ = 4 →): not the favoured token
    assert r["logp_c"].exp().tolist() == pytest.approx([0.8, rest])
    assert r["chain_logp"].exp().tolist() == pytest.approx([0.9 * 0.8, 0.3 * rest])
    assert r["correct"].tolist() == [True, False]
    assert r["direct_logp"].exp().tolist() == pytest.approx([0.2, 0.1])
    # greedy decoding and whole-entity log-probabilities
    m.set(DIRECT, 4, {6: 0.7})              # a two-token entity [4, 6] after "2 →"
    assert chain.greedy_entity(m, torch.tensor([[2, DIRECT]]), 2).tolist() == [[4, 6]]
    lp = chain.entity_logprob(m, torch.tensor([[2, DIRECT]]), torch.tensor([[4, 6]]))
    assert lp.exp().item() == pytest.approx(0.9 * 0.7)


def test_logit_maps_read_the_right_positions():
    data = chain.make_chain_data(40, 1, seed=0)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=16, max_len=3))
    t = data.valid_triples
    q = chain.logit_maps(model, data, t, "query")
    with torch.no_grad():
        full = model(torch.cat([data.a[t], torch.full((len(t), 1), INDIRECT)], 1))[:, -1]
    assert torch.allclose(q["C|A"], full[:, data.c[t, 0]])
    first = chain.logit_maps(model, data, t, "first")
    # position 0 sees only A: "C|A" and "B|A" come from the same output row
    with torch.no_grad():
        row = model(data.a[t, :1])[:, 0]
    assert torch.allclose(first["C|A"], row[:, data.c[t, 0]]) and torch.allclose(first["B|A"], row[:, data.b[t, 0]])


def test_related_tokens_structure():
    d = chain.make_related_chain_data(800, 600, 200, 50, seed=2)
    assert len(d.train) == 700 and len(d.valid) == 50 and d.train.tokens.shape[1] == 5
    assert d.chance_prob == pytest.approx(1 / 250) and len(d.unused) == 350
    assert len({d.x, d.y, d.z}) == 3 and not {d.x, d.y, d.z} & set(d.index.tolist())
    assert len(set(d.index.tolist())) == 250 and not set(d.index.tolist()) & set(d.unused.tolist())
    for row in d.valid.tokens.tolist():                                          # x i ↝ z i
        assert row[0] == d.x and row[2] == INDIRECT and row[3] == d.z and row[1] == row[4]
    train_rows = _rows(d.train)
    assert not (_rows(d.valid) & train_rows)
    held = d.index[d.valid_triples]
    assert _rows(d.sentences("ab", held)) <= train_rows and _rows(d.sentences("bc", held)) <= train_rows
    assert d.valid.answer[0].tolist() == [False, False, False, True, True]


def test_tiny_model_shows_intransitivity_and_two_step_success():
    data = chain.make_chain_data(80, 1, seed=0, held_out_fraction=0.3)          # 20 triples, 6 held out
    lab.seed_everything(0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=32, max_len=3))
    loop = epoch_loop(dict(epochs=150, batch_size=32, lr=1e-2, eval_every=150), len(data.train), "cpu",
                      progress=False)
    h = train_one(model, data.train, loop, 32, 0, {"train": data.train, "valid": data.valid})
    m = chain.two_step_metrics(model, data)
    assert h.last("train_prob") > 0.9
    assert m["valid_two_step_prob"] > 0.8 and m["valid_two_step_acc"] == 1.0
    assert m["valid_direct_prob"] < data.chance_prob
    assert m["valid_direct_prob"] == pytest.approx(h.last("valid_prob"), rel=1e-4)
