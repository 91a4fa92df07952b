"""The library core: model, parameter rules, training loop (determinism, resume), registry."""
import math

import pytest
import torch

import reasoning_lab as lab
from reasoning_lab.epochs import epoch_loop, train_one
from reasoning_lab.model import ModelConfig, Transformer, apply_rotary, count_params, rotary_tables
from reasoning_lab.experiments.params import Bool, Choice, CompileMode, Float, Int, Seq, validate
from reasoning_lab.studies.reversal.task import make_reversal_data


def tiny(**kw):
    cfg = dict(vocab_size=23, n_layers=2, n_heads=2, d_model=16, max_len=12)
    cfg.update(kw)
    torch.manual_seed(0)
    return Transformer(ModelConfig(**cfg))


@pytest.mark.parametrize("arch", ["gpt", "llama"])
@pytest.mark.parametrize("pos", ["none", "absolute", "rotary"])
def test_shapes_and_causality(arch, pos):
    model = tiny(arch=arch, pos_encoding=pos).eval()
    x = torch.randint(0, 23, (3, 10))
    out = model(x)
    assert out.shape == (3, 10, 23)
    y = x.clone()
    y[:, 6:] = torch.randint(0, 23, (3, 4))        # change the future only
    torch.testing.assert_close(model(y)[:, :6], out[:, :6])
    assert not torch.allclose(model(y)[:, 6:], out[:, 6:])


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rotary_tables(32, 8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def score(i, j):
        qi = apply_rotary(q.view(1, 8), cos[i:i + 1], sin[i:i + 1])
        kj = apply_rotary(k.view(1, 8), cos[j:j + 1], sin[j:j + 1])
        return (qi * kj).sum().item()

    assert score(3, 1) == pytest.approx(score(13, 11), abs=1e-5)
    assert score(7, 7) == pytest.approx(score(20, 20), abs=1e-5)
    assert score(5, 1) != pytest.approx(score(5, 3), abs=1e-3)


def test_partial_rotary_leaves_the_other_dims_alone():
    cos, sin = rotary_tables(4, 4, 10000.0)
    x = torch.randn(4, 8)
    out = apply_rotary(x, cos, sin)
    torch.testing.assert_close(out[:, 4:], x[:, 4:])


@pytest.mark.parametrize("arch", ["gpt", "llama"])
@pytest.mark.parametrize("pos", ["none", "absolute", "rotary"])
@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_formula(arch, pos, tie):
    cfg = ModelConfig(vocab_size=31, n_layers=3, n_heads=4, d_model=24, d_ff=40, max_len=9, arch=arch,
                      pos_encoding=pos, tie_embeddings=tie)
    model = Transformer(cfg)
    counts = count_params(cfg)
    assert model.num_params() == counts["total"]
    assert model.num_params(non_embedding=True) == counts["non_embedding"]


def test_gpt2_size_formula_matches_hand_count():
    # GPT-2 small-like: 12 layers of 12d^2 + 13d, embeddings, final LN, untied head
    d, V, P, L = 768, 802, 1024, 24
    cfg = ModelConfig(vocab_size=V, n_layers=L, n_heads=12, d_model=d, max_len=P)
    assert count_params(cfg)["total"] == V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d + V * d


def test_frozen_embeddings_do_not_move():
    model = tiny()
    model.freeze_embeddings()
    before = model.tok_emb.weight.clone()
    data = make_reversal_data(40, 1, seed=0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=16, max_len=3))
    model.freeze_embeddings()
    before = model.tok_emb.weight.clone()
    train_one(model, data.train, epoch_loop(dict(epochs=2, batch_size=16, lr=1e-2), len(data.train), "cpu"), 16)
    torch.testing.assert_close(model.tok_emb.weight, before)


def test_tied_embeddings_share_storage():
    model = tiny(tie_embeddings=True)
    assert model.head.weight is model.tok_emb.weight


def test_rules_give_one_line_errors():
    with pytest.raises(ValueError, match=r"n_layers=-1 .*integer"):
        validate("x", {"n_layers": Int(1)}, {"n_layers": -1})
    with pytest.raises(ValueError, match="unknown parameter 'foo'.*valid parameters: a"):
        validate("x", {"a": Int()}, {"foo": 1})
    assert Int(1)("n", "3") == 3
    assert Float(0, 1)("lr", "0.5") == 0.5
    assert Bool()("b", "true") is True
    assert CompileMode()("compile", "reduce-overhead") == "reduce-overhead"
    assert CompileMode()("compile", "False") is False
    with pytest.raises(ValueError, match=r"compile='fast' is not allowed: .*True, False or a torch.compile mode"):
        CompileMode()("compile", "fast")
    assert Seq(Float(0, 1), length=2)("betas", "0.9,0.99") == [0.9, 0.99]
    with pytest.raises(ValueError, match="betas"):
        Seq(Float(0, 1), length=2)("betas", [0.9, 2.0])
    with pytest.raises(ValueError, match="'auto'"):
        Choice("auto", "cpu")("device", "tpu")
    for bad in (True, 1.5, "x"):
        with pytest.raises(ValueError):
            Int()("n", bad)
    with pytest.raises(ValueError):
        Float(0, 1)("lr", float("nan"))


def test_reversal_data_split_follows_the_original():
    data = make_reversal_data(800, 1, seed=1)
    assert data.n_pairs == 200 and len(data.train) == 340 and len(data.valid) == 60
    assert data.chance_prob == pytest.approx(1 / 200)
    assert set(data.a.flatten().tolist()).isdisjoint(data.b.flatten().tolist())
    assert data.train.tokens.min() >= 0 and data.train.tokens.max() < data.vocab_size
    # every held-out sentence is the reverse of a training sentence
    train = {tuple(r) for r in data.train.tokens.tolist()}
    for row in data.valid.tokens.tolist():
        a, rel, b = row
        assert (b, 1 - rel, a) in train and tuple(row) not in train
    two = make_reversal_data(800, 2, seed=1)
    assert two.n_pairs == 400 and len(two.train) == 680 and len(two.valid) == 120
    assert len({tuple(r) for r in two.a.tolist()}) == 400


def _short_run(tmp_path=None, stop_at=None):
    data = make_reversal_data(80, 1, seed=0)
    lab.seed_everything(0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=16, max_len=3,
                                    dropout=0.1))
    p = dict(epochs=8, batch_size=8, lr=3e-3)
    spe = -(-len(data.train) // 8)
    loop = epoch_loop(p, len(data.train), "cpu", None if tmp_path is None else tmp_path / "ck.pt",
                      checkpoint_every=3 * spe)

    def stop(epoch, history):
        if stop_at is not None and epoch == stop_at:
            raise KeyboardInterrupt

    return train_one(model, data.train, loop, 8, 0, {"train": data.train, "valid": data.valid}, on_epoch_end=stop)


def test_same_seed_same_metrics():
    assert _short_run().data == _short_run().data


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path):
    reference = _short_run()
    with pytest.raises(KeyboardInterrupt):
        _short_run(tmp_path, stop_at=7)
    assert (tmp_path / "ck.pt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind
    resumed = _short_run(tmp_path)
    assert resumed.data == reference.data


def test_training_learns_the_seen_direction_only():
    data = make_reversal_data(200, 1, seed=0)
    lab.seed_everything(0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=32, max_len=3))
    loop = epoch_loop(dict(epochs=60, batch_size=32, lr=3e-3, eval_every=60), len(data.train), "cpu")
    h = train_one(model, data.train, loop, 32, 0, {"train": data.train, "valid": data.valid})
    assert h.last("train_prob") > 0.9
    assert h.last("valid_prob") < data.chance_prob
    assert h.last("valid_nll") > math.log(data.n_pairs)


def test_whole_sequence_loss_changes_training():
    data = make_reversal_data(80, 1, seed=0)
    mask_last = data.train.loss_mask(False)
    mask_all = data.train.loss_mask(True)
    assert mask_last.sum() < mask_all.sum() and (mask_all | mask_last).equal(mask_all)


def test_registry_defaults_have_rules():
    for exp in lab.experiments.available():
        defaults = exp.defaults()
        assert {"seed", "device", "output_dir"} <= set(defaults), exp.name
        assert set(defaults) == set(exp.rules), (exp.name, set(defaults) ^ set(exp.rules))
        exp.resolve("default")
        for preset in exp.presets:
            exp.resolve(preset)


def test_a_run_folder_holds_one_run(tmp_path):
    """A folder records its run; another run (other results-deciding parameters, another experiment) is
    refused naming what differs, before anything in it changes; where and how fast it runs may differ;
    a second writer is refused while the first holds it."""
    from reasoning_lab.experiments.folder import FolderError, RunFolder, read_record

    base = {"seed": 0, "lr": 0.01, "device": "cpu", "threads": 1, "output_dir": str(tmp_path / "a")}
    with RunFolder(tmp_path / "a", "x", base) as folder:
        assert folder.state == "new" and folder.checkpoint("model") == tmp_path / "a" / "checkpoints" / "model.pt"
        with pytest.raises(FolderError, match="another run is writing to this folder"):
            RunFolder(tmp_path / "a", "x", base)
        folder.set_status("finished")
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(FolderError, match=r"holds a run of x with lr=0.01 \(this run: 0.02\)"):
        RunFolder(tmp_path / "a", "x", {**base, "lr": 0.02})
    with pytest.raises(FolderError, match="holds a run of 'x', not 'y'"):
        RunFolder(tmp_path / "a", "y", base)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before      # nothing changed
    again = RunFolder(tmp_path / "a", "x", {**base, "threads": 4, "device": "cuda"})      # where, not what
    assert again.state == "finished" and read_record(tmp_path / "a")["params"] == {"seed": 0, "lr": 0.01}
    again.close()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(FolderError, match="not empty"):
        RunFolder(tmp_path / "b", "x", base)
    (tmp_path / "f").write_text("a file")
    with pytest.raises(FolderError, match="is a file"):
        RunFolder(tmp_path / "f", "x", base)
    with pytest.raises(FolderError, match="is a file, so the folder cannot be made"):
        RunFolder(tmp_path / "f" / "run", "x", base)


def test_training_player_scrubs_recorded_frames():
    """The shared player: one image per panel and frame, a loss panel, a self-contained HTML slider."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    frames = [(e, {"a": rng.random((4, 4)), "b": rng.random((4, 4))}) for e in (1, 2, 3)]
    html = lab.plots.training_player(frames, {"a": "A", "b": "B"}, {"loss": ([1, 2, 3], [3.0, 2.0, 1.0])},
                                     total=3, chance=1.5, clip_quantile=0.1).data
    assert "<input" in html and "font-awesome" not in html
    assert html.count("data:image/png;base64") == len(frames)
    hist = [(s, {"h": rng.random((8, 6))}) for s in (10, 20)]
    html = lab.plots.training_player(hist, {"h": "outputs"}, {"mse": ([10, 20], [1.0, 0.5])}, xlabel="step",
                                     log_colour=True, extent=(-0.5, 5.5, -0.5, 5.5), identity_line=True,
                                     logy=True).data
    assert html.count("data:image/png;base64") == len(hist)
