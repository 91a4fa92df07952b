"""Reversal-curse data, probes, the paper preset's size, and the curse itself at tiny scale."""
import math

import numpy as np
import pytest
import torch

import reasoning_lab as lab
from reasoning_lab import experiments
from reasoning_lab.model import ModelConfig, Transformer, count_params
from reasoning_lab.studies.reversal import task as rv
from reasoning_lab.studies.reversal.in_context import make_reversal_icl_data
from reasoning_lab.epochs import epoch_loop, train_one
from reasoning_lab.evaluate import answer_logprobs


def _facts(seq: lab.SeqData, k: int) -> set[tuple]:
    return {tuple(r) for r in seq.tokens.tolist()}


# --------------------------------------------------------------------------------------------- data

@pytest.mark.parametrize("word_size,n_pairs,n_train,n_valid", [(1, 200, 340, 60), (2, 400, 680, 120)])
def test_reversal_data_counts_and_split(word_size, n_pairs, n_train, n_valid):
    d = rv.make_reversal_data(800, word_size, seed=3)
    assert d.n_pairs == n_pairs and len(d.train) == n_train and len(d.valid) == n_valid
    assert len(d.train_pairs) == round(0.7 * n_pairs) and d.vocab_size == 802
    assert d.chance_prob == pytest.approx(1 / n_pairs)
    # disjoint alphabets of V/4 tokens each, shifted past the two relation tokens
    a_alpha, b_alpha = set(d.a.flatten().tolist()), set(d.b.flatten().tolist())
    assert not a_alpha & b_alpha and len(a_alpha) <= 200 and len(b_alpha) <= 200
    assert min(a_alpha | b_alpha) >= 2 and max(a_alpha | b_alpha) < 802
    # entities are distinct words
    assert len({tuple(r) for r in d.a.tolist()}) == n_pairs == len({tuple(r) for r in d.b.tolist()})
    # every held-out sentence is the reverse of a trained one, and never itself trained
    train, valid = _facts(d.train, word_size), _facts(d.valid, word_size)
    assert not train & valid
    k = word_size
    for row in valid:
        left, rel, right = row[:k], row[k], row[k + 1:]
        assert right + (1 - rel,) + left in train
    assert d.valid.answer.sum(1).eq(k).all() and d.valid.answer[:, k + 1:].all()


def test_reversal_data_is_deterministic():
    a, b = rv.make_reversal_data(400, 2, seed=5), rv.make_reversal_data(400, 2, seed=5)
    assert torch.equal(a.train.tokens, b.train.tokens) and torch.equal(a.valid.tokens, b.valid.tokens)
    assert not torch.equal(a.train.tokens, rv.make_reversal_data(400, 2, seed=6).train.tokens)


def test_icl_data():
    d = make_reversal_icl_data(400, 100, 10, seed=1)
    assert len(d.train) == 700 and len(d.valid) == 300 and d.vocab_size == 403
    assert d.chance_prob == pytest.approx(0.01)
    t = d.train.tokens
    # A 0 B 2 B 1 A, answer = the last token
    assert (t[:, 1] == 0).all() and (t[:, 3] == 2).all() and (t[:, 5] == 1).all()
    assert torch.equal(t[:, 0], t[:, 6]) and torch.equal(t[:, 2], t[:, 4])
    assert d.train.answer[:, -1].all() and d.train.answer.sum() == 700
    # per A token: 7 partners in training, the other 3 held out, all 10 distinct
    for a in d.a.tolist()[:10]:
        tb = set(t[t[:, 0] == a, 2].tolist())
        vb = set(d.valid.tokens[d.valid.tokens[:, 0] == a, 2].tolist())
        assert len(tb) == 7 and len(vb) == 3 and not tb & vb and tb | vb == set(d.b.tolist())
    assert torch.equal(t, make_reversal_icl_data(400, 100, 10, seed=1).train.tokens)


# --------------------------------------------------------------------------------------------- probes

def _tiny_model(vocab, max_len=3, seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=vocab, n_layers=1, n_heads=2, d_model=16, max_len=max_len)).eval()


def test_logit_matrices_shapes_and_values():
    d = rv.make_reversal_data(80, 1, seed=0)            # 20 pairs: 14 trained both ways, 6 held out
    model = _tiny_model(d.vocab_size)
    mats = rv.logit_matrices(model, d, view="relation")
    assert {k: tuple(v.shape) for k, v in mats.items()} == {
        "train_forward": (14, 14), "train_backward": (14, 14), "valid_seen": (6, 6), "valid_unseen": (6, 6)}
    q, rel, ans = rv.query_groups(d)["train_forward"]
    with torch.no_grad():
        direct = model(torch.cat([q, rel[:, None]], 1))[:, -1][:, ans[:, 0]]
        first = model(q[:, :1])[:, 0][:, ans[:, 0]]
    assert torch.allclose(mats["train_forward"], direct)
    assert torch.allclose(rv.logit_matrices(model, d, view="first")["train_forward"], first)
    # the unseen-direction questions are exactly the validation set, in order
    q, rel, ans = rv.query_groups(d)["valid_unseen"]
    assert torch.equal(torch.cat([q, rel[:, None], ans], 1), d.valid.tokens)


def test_logprob_scores_match_answer_logprobs():
    d = rv.make_reversal_data(40, 2, seed=1)
    model = _tiny_model(d.vocab_size, max_len=5)
    M = rv.logit_matrices(model, d, view="relation", score="logprob")["valid_unseen"]
    assert torch.allclose(M.diagonal(), answer_logprobs(model, d.valid)["whole"], atol=1e-5)
    assert (M <= 0).all()


def test_diagonal_accuracy_and_cosines():
    M = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 5.0, 5.0]])
    assert rv.diagonal_accuracy(M) == pytest.approx(1 / 3)    # row 0 only (row 2 is a tie)
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    C = rv.cosine_matrix(v)
    s = 1 / math.sqrt(2)
    assert torch.allclose(C, torch.tensor([[1.0, s, 0.0], [s, 1.0, -s], [0.0, -s, 1.0]]), atol=1e-6)
    assert sorted(rv.off_diagonal(C).tolist()) == pytest.approx(sorted([s, 0.0, s, -s, 0.0, -s]))
    d = rv.make_reversal_data(800, 1, seed=0)
    ids = rv.embedding_token_ids(d)
    assert len(ids) == 402 and ids[:2].tolist() == [0, 1] and len(set(ids.tolist())) == 402


def test_random_embeddings_are_nearly_orthogonal():
    """The init baseline of the cosine plot: rows of N(0, 0.02²) in d dims have cosine std ≈ 1/sqrt(d)."""
    g = torch.Generator().manual_seed(0)
    for d in (64, 768):
        C = rv.cosine_matrix(torch.randn(400, d, generator=g) * 0.02)
        assert rv.off_diagonal(C).std().item() == pytest.approx(1 / math.sqrt(d), rel=0.05)


# --------------------------------------------------------------------------------------------- presets

def test_paper_preset_matches_the_original_parameter_count():
    """The original: HF GPT-2, vocab 800 + 2 relation tokens, d=768, 24 layers, a 1024-row position table
    and (through a subclassing bug) an untied output layer: 172,128,768 parameters."""
    p = experiments.get("reversal-curse").resolve("paper")
    V, d, L = p["vocab_size"] + 2, p["embed_dim"], p["n_layers"]
    assert (V, d, L, p["n_heads"], p["max_len"], p["tie_embeddings"]) == (802, 768, 24, 12, 1024, False)
    original = V * d + 1024 * d + L * (12 * d * d + 13 * d) + 2 * d + V * d
    assert original == 172_128_768
    cfg = ModelConfig(vocab_size=V, n_layers=L, n_heads=p["n_heads"], d_model=d, max_len=p["max_len"],
                      tie_embeddings=p["tie_embeddings"], dropout=p["dropout"])
    assert count_params(cfg)["total"] == original
    with torch.device("meta"):
        assert Transformer(cfg).num_params() == original
    # without the 1024-row table (max_len = sentence length) the model is 3 rows of 768 short of 1024
    assert count_params(ModelConfig(**{**cfg.to_dict(), "max_len": 3, "d_ff": None}))["total"] \
        == original - 1021 * d


def test_bad_max_len_is_refused():
    with pytest.raises(ValueError, match="max_len=4"):
        experiments.get("reversal-curse").resolve("default", {"word_size": 2, "max_len": 4})


# --------------------------------------------------------------------------------------------- the curse

@pytest.mark.parametrize("word_size", [1, 2, 3])
@pytest.mark.parametrize("pos", ["none", "absolute", "rotary"])
def test_the_curse_holds(pos, word_size):
    """Tiny models learn every training sentence and stay at or below chance on the reversed ones.

    Two layers: with no positional encoding one layer sees the query entity as a bag of tokens, and two
    entities that are permutations of each other cannot be told apart."""
    d = rv.make_reversal_data(40, word_size, seed=0)       # alphabets of 10 tokens; 10 or 20 pairs
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=d.vocab_size, n_layers=2, n_heads=2, d_model=32,
                                    max_len=2 * word_size + 1, pos_encoding=pos))
    n = len(d.train)
    loop = epoch_loop(dict(epochs=300, batch_size=n, lr=0.01, eval_every=300), n, "cpu", progress=False)
    h = train_one(model, d.train, loop, n, 0, {"train": d.train, "valid": d.valid})
    assert h.last("train_prob") >= 0.99, h.last("train_prob")
    assert h.last("valid_prob") <= d.chance_prob, (h.last("valid_prob"), d.chance_prob)


# --------------------------------------------------------------------------------------------- fixes

def test_reversed_copies_never_state_a_question():
    from reasoning_lab.studies.reversal import fixes as fx
    d = rv.make_reversal_data(80, 2, seed=2)
    train, vocab = fx.training_set(d, "reversed_copies", 2)
    assert vocab == d.vocab_size + 2 and len(train) == 2 * len(d.train)
    copies = train.tokens[len(d.train):]
    # X r Y  ->  Y r' X with r' = vocab + r
    assert torch.equal(copies[:, :2], d.train.tokens[:, 3:]) and torch.equal(copies[:, 3:], d.train.tokens[:, :2])
    assert torch.equal(copies[:, 2], d.vocab_size + d.train.tokens[:, 2])
    assert not _facts(train, 2) & _facts(d.valid, 2)
    assert train.answer[len(d.train):, 3:].all() and not train.answer[len(d.train):, :3].any()


def test_identity_sentences():
    from reasoning_lab.studies.reversal import fixes as fx
    d = rv.make_reversal_data(80, 1, seed=0)
    typed, vocab = fx.training_set(d, "identity_bridge", 1)
    extra = typed.tokens[len(d.train):]
    assert vocab == d.vocab_size and len(extra) == 2 * d.n_pairs
    assert torch.equal(extra[:, 0], extra[:, 2])
    a_ids = set(d.a.flatten().tolist())
    # A entities under "←" (token 1), B entities under "→" (token 0)
    assert all((row[1] == 1) == (row[0] in a_ids) for row in extra.tolist())
    neutral, vocab = fx.training_set(d, "identity_neutral", 1)
    assert vocab == d.vocab_size + 1 and (neutral.tokens[len(d.train):, 1] == d.vocab_size).all()
    assert not _facts(typed, 1) & _facts(d.valid, 1) and not _facts(neutral, 1) & _facts(d.valid, 1)
    with pytest.raises(ValueError, match="method='nope'"):
        fx.training_set(d, "nope", 1)


def test_uniform_masks():
    from reasoning_lab.studies.reversal.masked import uniform_masks
    m = uniform_masks(20000, 3, torch.Generator().manual_seed(0))
    assert m.any(1).all()
    # r ~ U(0,1): the number masked out of T is uniform on {0..T}; the empty rows get one position
    counts = torch.bincount(m.sum(1), minlength=4).float() / len(m)
    assert counts[2].item() == pytest.approx(0.25, abs=0.02) and counts[3].item() == pytest.approx(0.25, abs=0.02)
    assert counts[1].item() == pytest.approx(0.5, abs=0.02)


def test_masked_training_learns_and_scores_masked_answers():
    from reasoning_lab.studies.reversal.masked import masked_answer_logprobs, train_masked
    d = rv.make_reversal_data(40, 1, seed=0)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=d.vocab_size + 1, n_layers=1, n_heads=2, d_model=32, max_len=3,
                                    causal=False))
    with torch.no_grad():   # bidirectional: the first position sees the last token
        x = d.train.tokens[:4]
        y = x.clone()
        y[:, 2] = (y[:, 2] + 1) % d.vocab_size
        assert not torch.allclose(model(x)[:, 0], model(y)[:, 0])
    n = len(d.train)
    loop = epoch_loop(dict(epochs=400, batch_size=n, lr=0.01, eval_every=400), n, "cpu", progress=False)
    h = train_masked(model, d.train, loop, n, 0, d.vocab_size, {"train": d.train})
    assert h.last("train_prob") > 0.5
    lp = masked_answer_logprobs(model, d.train, d.vocab_size)["whole"]
    assert lp.exp().mean().item() == pytest.approx(h.last("train_prob"), rel=1e-5)
    with pytest.raises(ValueError, match="causal=False"):
        train_masked(_tiny_model(d.vocab_size + 1), d.train, loop, n, 0, d.vocab_size)


@pytest.mark.parametrize("pos", ["absolute", "rotary"])
def test_attention_weights_reproduce_the_block(pos):
    from reasoning_lab.model import attention_weights
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=30, n_layers=2, n_heads=2, d_model=16, max_len=7,
                                    pos_encoding=pos)).eval()
    tokens = torch.randint(0, 30, (5, 7))
    att = attention_weights(model, tokens)
    assert att.shape == (2, 5, 2, 7, 7)
    assert torch.allclose(att.sum(-1), torch.ones(2, 5, 2, 7), atol=1e-5)
    assert (att.triu(1) == 0).all()
    # attention output rebuilt from the weights equals the block's own attention output
    block, x = model.blocks[0], model.hidden_states(tokens)[0]
    h = block.norm1(x)
    _, _, v = block.attn.qkv(h).view(5, 7, 3, 2, 8).permute(2, 0, 3, 1, 4)
    rope = (model.rope_cos[:7], model.rope_sin[:7]) if pos == "rotary" else None
    with torch.no_grad():
        rebuilt = block.attn.proj((att[0] @ v).transpose(1, 2).reshape(5, 7, 16))
        assert torch.allclose(rebuilt, block.attn(h, rope), atol=1e-5)


def test_every_method_trains_and_the_seeds_match_separate_runs(tmp_path):
    """Each fix trains (valid probabilities, the model it says), and its seeds trained together give the
    histories of each seed trained alone."""
    from reasoning_lab.studies.reversal import fixes as fx
    make = lambda s: rv.make_reversal_data(40, 1, seed=s)
    p = dict(seed=0, seeds=2, n_layers=1, n_heads=2, embed_dim=16, dropout=0.0, pos_encoding="absolute",
             tie_embeddings=False, freeze_embeddings=False, epochs=2, batch_size=16, lr=0.01, weight_decay=0.01,
             betas=[0.9, 0.999], loss_whole_sequence=False, word_size=1, max_len=0, strong_weight_decay=1.0,
             masked_epochs=2, masked_lr=0.003, methods=list(fx.METHODS))
    runs = fx.train_methods(p, make, "cpu", checkpoint=lambda name: tmp_path / f"{name}.pt")
    d = make(0)
    for m, run in runs.items():
        h, model = run.histories[0], run.models[0]
        assert 0.0 <= h.last("valid_prob") <= 1.0 and len(h["epoch"]) == 2
        assert (model.head.weight is model.tok_emb.weight) == (m == "tied")
        assert model.cfg.causal == (m != "masked")
        extra = {"reversed_copies": 2, "identity_neutral": 1, "masked": 1, "reversed_relations": 6,
                 "two_relations": 2}.get(m, 0)
        assert model.cfg.vocab_size == d.vocab_size + extra
        for s in (0, 1):
            one = fx.train_method({**p, "seed": s, "seeds": 1}, make, m, "cpu")
            for key in ("train_loss", "valid_prob", "train_prob"):
                assert np.allclose(run.histories[s][key], one.history[key], rtol=1e-3, atol=1e-6), (m, s, key)
    assert (tmp_path / "masked-seeds-seed1.pt").exists() and (tmp_path / "tied-seeds.pt").exists()
    with pytest.raises(ValueError, match="method='nope'"):
        fx.train_method(p, make, "nope", "cpu")


def test_interrupted_masked_training_with_dropout_resumes_exactly(tmp_path, monkeypatch):
    import reasoning_lab.studies.reversal.masked as masked

    d = rv.make_reversal_data(40, 1, seed=0)

    def run(ckpt=None):
        torch.manual_seed(0)
        model = Transformer(ModelConfig(vocab_size=d.vocab_size + 1, n_layers=1, n_heads=2, d_model=16,
                                        max_len=3, causal=False, dropout=0.2))
        spe = -(-len(d.train) // 16)
        loop = epoch_loop(dict(epochs=6, batch_size=16, lr=0.01, eval_every=2), len(d.train), "cpu", ckpt,
                          checkpoint_every=2 * spe, progress=False)
        return masked.train_masked(model, d.train, loop, 16, 0, d.vocab_size, {"train": d.train})

    straight = run()
    original, calls = masked.uniform_masks, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 12:          # in epoch 3 (4 batches per epoch), after the epoch-2 checkpoint
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(masked, "uniform_masks", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "m.pt")
    monkeypatch.setattr(masked, "uniform_masks", original)
    torch.manual_seed(123)            # the resumed run must not depend on the global state it starts in
    assert run(tmp_path / "m.pt").data == straight.data


