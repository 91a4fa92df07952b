"""Batched-seed training (reasoning_lab.epochs.train_seeds) against separate runs (epochs.train_one)."""
import math

import pytest
import torch

import reasoning_lab as lab
from reasoning_lab.epochs import epoch_loop, train_one, train_seeds
from reasoning_lab.stacked import StackedTransformer, VmapEnsemble, build_models
from reasoning_lab.model import ModelConfig, Transformer
from reasoning_lab.studies.reversal.task import make_reversal_data
from reasoning_lab.data import loss_positions

SEEDS = [3, 4]


def _make(seed, **kw):
    cfg = dict(vocab_size=42, n_layers=2, n_heads=2, d_model=16, max_len=3)
    cfg.update(kw)
    return Transformer(ModelConfig(**cfg))


def _cfg(**kw):
    """A chapter's epoch parameters, with loop settings (grad_clip, warmup_steps, checkpoints in epochs)."""
    base = dict(epochs=3, batch_size=16, lr=3e-3, weight_decay=0.01, eval_every=1, progress=False, seed=0)
    base.update(kw)
    return base


def _loop(cfg, n):
    extra = {k: cfg[k] for k in ("grad_clip", "progress", "checkpoint_path") if k in cfg}
    if cfg.get("warmup_steps"):
        extra.update(schedule="warmup", warmup_steps=cfg["warmup_steps"])
    if cfg.get("checkpoint_every"):
        extra["checkpoint_every"] = cfg["checkpoint_every"] * math.ceil(n / cfg["batch_size"])
    return epoch_loop(cfg, n, "cpu", **extra)


def _train_seeds(make, datas, cfg, splits, seeds, **kw):
    models = make if isinstance(make, list) else build_models(make, seeds)
    return train_seeds(models, datas, _loop(cfg, len(datas[0])), cfg["batch_size"], seeds, splits,
                       static=cfg.get("static_batches"), **kw)


def _train(model, data, cfg, splits):
    return train_one(model, data, _loop(cfg, len(data)), cfg["batch_size"], cfg["seed"], splits,
                     static=cfg.get("static_batches"))


def _data():
    return [make_reversal_data(40, 1, seed=s) for s in SEEDS]


def _sequential(datas, cfg, **model_kw):
    out = []
    for s, d in zip(SEEDS, datas):
        lab.seed_everything(s)
        model = _make(s, **model_kw)
        out.append((_train(model, d.train, {**cfg, "seed": s}, {"train": d.train, "valid": d.valid}), model))
    return out


def _assert_close(h1, h2, tol=1e-5):
    assert h1.keys() == h2.keys()
    for k in h1.keys():
        assert torch.allclose(torch.tensor(h1[k]), torch.tensor(h2[k]), atol=tol, rtol=0), k


def test_loss_positions_left_aligned_with_padding():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    index, weight = loss_positions(mask)
    assert index[0].tolist() == [1, 2] and weight[0].tolist() == [True, True]
    assert index[1, 0].item() == 3 and weight[1].tolist() == [True, False]
    assert weight[2].tolist() == [False, False]


@pytest.mark.parametrize("kw", [dict(), dict(arch="llama", pos_encoding="rotary"),
                                dict(pos_encoding="none", tie_embeddings=True), dict(causal=False)])
def test_stacked_forward_matches_each_model(kw):
    models = build_models(lambda s: _make(s, **kw), SEEDS)
    ens = StackedTransformer(models)
    tokens = torch.randint(0, 42, (2, 5, 3))
    index = torch.tensor([1, 2, 0, 2, 1]).view(1, 5, 1).repeat(2, 1, 1)
    full, part = ens(tokens), ens(tokens, index)
    for s, m in enumerate(models):
        assert torch.allclose(full[s], m(tokens[s]), atol=1e-6)
        assert torch.allclose(part[s], m(tokens[s], index=index[s]), atol=1e-6)
    assert torch.equal(part[1], full[1].gather(1, index[1, :, :, None].expand(-1, -1, 42)))


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_train_seeds_matches_sequential_training(backend):
    datas = _data()
    cfg = _cfg(grad_clip=0.5, warmup_steps=3)
    seq = _sequential(datas, cfg)
    models = build_models(_make, SEEDS)
    hist = _train_seeds(models, [d.train for d in datas], cfg,
                        [{"train": d.train, "valid": d.valid} for d in datas], SEEDS, backend=backend)
    assert len(hist) == 2 and hist[0]["epoch"] == [1.0, 2.0, 3.0]
    for (h_seq, m_seq), h, m in zip(seq, hist, models):
        _assert_close(h_seq, h)
        for (name, p1), p2 in zip(m_seq.named_parameters(), m.parameters()):  # trained in place
            assert torch.allclose(p1, p2, atol=1e-5), name
    assert hist[0]["train_loss"] != hist[1]["train_loss"]  # per-seed histories, not copies


def test_train_seeds_frozen_tied_embeddings_match():
    datas = _data()
    cfg = _cfg(epochs=2)
    seq = []
    for s, d in zip(SEEDS, datas):
        lab.seed_everything(s)
        model = _make(s, tie_embeddings=True)
        model.freeze_embeddings()
        seq.append(_train(model, d.train, {**cfg, "seed": s}, {"valid": d.valid}))

    def make(s):
        model = _make(s, tie_embeddings=True)
        model.freeze_embeddings()
        return model
    hist = _train_seeds(make, [d.train for d in datas], cfg, [{"valid": d.valid} for d in datas], SEEDS)
    for h1, h2 in zip(seq, hist):
        _assert_close(h1, h2)


def test_resume_after_interruption_ends_like_an_uninterrupted_run(tmp_path):
    datas = _data()
    splits = [{"valid": d.valid} for d in datas]
    cfg = _cfg(epochs=4)
    full = _train_seeds(lambda s: _make(s, dropout=0.1), [d.train for d in datas], cfg, splits, SEEDS)

    ckpt = tmp_path / "ens.pt"
    cfg = _cfg(epochs=4, checkpoint_path=ckpt, checkpoint_every=2)

    def stop(epoch, histories):
        if epoch == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _train_seeds(lambda s: _make(s, dropout=0.1), [d.train for d in datas], cfg, splits, SEEDS, on_epoch_end=stop)
    assert ckpt.exists() and not list(tmp_path.glob(".ens.pt*"))   # written atomically
    resumed = _train_seeds(lambda s: _make(s, dropout=0.1), [d.train for d in datas], cfg, splits, SEEDS)
    for h1, h2 in zip(full, resumed):
        assert h1.data == h2.data
    with pytest.raises(ValueError, match="seeds"):
        _train_seeds(_make, [d.train for d in datas], cfg, splits, [5, 6])


def test_static_batches_pad_without_changing_training():
    d = _data()[0]
    runs = []
    for static in (False, True):
        lab.seed_everything(0)
        model = _make(0)
        runs.append(_train(model, d.train, _cfg(batch_size=24, static_batches=static), {"valid": d.valid}))
    _assert_close(*runs, tol=1e-6)


def test_bad_input():
    datas = _data()
    with pytest.raises(ValueError, match="one per seed"):
        _train_seeds(_make, [d.train for d in datas], _cfg(), None, [1])
    with pytest.raises(ValueError, match="same shape"):
        _train_seeds(_make, [datas[0].train, datas[1].train.take(slice(0, 5))], _cfg(), None, SEEDS)
    with pytest.raises(ValueError, match="backend"):
        _train_seeds(_make, [d.train for d in datas], _cfg(), None, SEEDS, backend="gpu")
    with pytest.raises(ValueError, match="ModelConfig"):
        StackedTransformer([_make(0), _make(0, norm_eps=1e-3)])
    assert isinstance(VmapEnsemble([_make(0), _make(1)]), VmapEnsemble)


def test_train_seeds_static_batches_match_dynamic_ones():
    datas = _data()   # 17 training sentences: batch 40 pads more rows than there are sentences
    runs = [_train_seeds(_make, [d.train for d in datas], _cfg(epochs=2, batch_size=40, static_batches=st),
                        [{"valid": d.valid} for d in datas], SEEDS) for st in (False, True)]
    for h1, h2 in zip(*runs):
        _assert_close(h1, h2, tol=1e-6)


@pytest.mark.parametrize("batched", [False, True])
def test_compiled_training_step_matches_eager(monkeypatch, batched):
    """The CUDA path compiles the model with static batches (for CUDA graphs). Without a GPU, run that same
    code path under torch.compile's ``aot_eager`` backend, which traces forward and backward as the GPU
    compiler does (no graph breaks allowed) but runs them with eager kernels: the histories must match."""
    import reasoning_lab.epochs as epochs
    import reasoning_lab.train as training

    datas = _data()
    cfg = _cfg(epochs=2, batch_size=24)

    def run():
        if batched:
            return _train_seeds(_make, [d.train for d in datas], cfg, [{"valid": d.valid} for d in datas], SEEDS)
        lab.seed_everything(0)
        return [_train(_make(0), datas[0].train, cfg, {"valid": datas[0].valid})]

    eager = run()
    compile_ = torch.compile
    monkeypatch.setattr(training, "compile_mode", lambda *_: "reduce-overhead")
    monkeypatch.setattr(epochs, "compile_mode", lambda *_: "reduce-overhead")
    calls = []

    def compile_on_cpu(model, mode=None, dynamic=None):
        calls.append(dynamic)
        return compile_(model, backend="aot_eager", dynamic=dynamic, fullgraph=True)

    monkeypatch.setattr(torch, "compile", compile_on_cpu)
    torch._dynamo.reset()
    compiled = run()
    torch._dynamo.reset()
    assert calls == [False]                 # compiled once, for static shapes
    for h1, h2 in zip(eager, compiled):
        _assert_close(h1, h2, tol=1e-5)
