"""The shared training loop (reasoning_lab.train.fit): schedules, bad input, the inductor-compiled and the
bf16 paths on the CPU, and resuming the shortest-path trainers (the other studies' resume tests live in
their own test files)."""
import math

import pytest
import torch

import reasoning_lab as lab
from reasoning_lab.epochs import epoch_loop, train_one
from reasoning_lab.model import ModelConfig, Transformer
from reasoning_lab.studies.reversal.task import make_reversal_data
from reasoning_lab.studies.shortest_paths import handcrafted as hc
from reasoning_lab.studies.shortest_paths import model as spm
from reasoning_lab.train import History, LoopConfig, learning_rate


def test_schedules():
    const = LoopConfig(steps=10, lr=1.0)
    assert [learning_rate(const, s) for s in (0, 9)] == [1.0, 1.0]
    warm = LoopConfig(steps=10, lr=1.0, schedule="warmup", warmup_steps=4)
    assert [learning_rate(warm, s) for s in (0, 3, 9)] == [0.25, 1.0, 1.0]
    step = LoopConfig(steps=10, lr=1.0, schedule="step", switch_step=5, lr_after_switch=0.1)
    assert [learning_rate(step, s) for s in (4, 5)] == [1.0, 0.1]
    cos = LoopConfig(steps=102, lr=1.0, schedule="cosine", warmup_steps=2, final_lr=0.1)
    assert learning_rate(cos, 0) == 0.5 and learning_rate(cos, 2) == pytest.approx(1.0)
    assert learning_rate(cos, 52) == pytest.approx(0.55) and learning_rate(cos, 102) == pytest.approx(0.1)
    assert learning_rate(LoopConfig(steps=3, schedule=lambda s: 0.5 * s), 2) == 1.0


def test_bad_loop_config():
    with pytest.raises(ValueError, match="schedule"):
        LoopConfig(steps=3, schedule="linear")
    with pytest.raises(ValueError, match="optimizer"):
        LoopConfig(steps=3, optimizer="sgd")
    with pytest.raises(ValueError, match="steps"):
        LoopConfig(steps=-1)


def test_history_groups_and_attributes():
    h = History()
    h.add(step=1, loss=2.0, **{"by_label/1": 0.5})
    assert h.step == [1.0] and h.loss == [2.0] and h.by_label == {"1": [0.5]}
    with pytest.raises(AttributeError):
        h.nothing


def _reversal_run(**kw):
    data = make_reversal_data(40, 1, seed=0)
    lab.seed_everything(0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=16, max_len=3))
    loop = epoch_loop(dict(epochs=3, batch_size=17, lr=1e-2), len(data.train), "cpu", progress=False, **kw)
    return train_one(model, data.train, loop, 17, 0, {"train": data.train, "valid": data.valid}, static=True)


def test_inductor_compiled_training_matches_eager_on_cpu():
    """The compiled path with the inductor backend (as on a GPU, here generating CPU kernels): the same
    histories as eager up to float rounding of the fused kernels (tolerance 1e-4 absolute)."""
    eager = _reversal_run()
    torch._dynamo.reset()
    compiled = _reversal_run(compile=True, compile_cpu=True)
    torch._dynamo.reset()
    assert eager.keys() == compiled.keys()
    for k in eager.keys():
        assert compiled[k] == pytest.approx(eager[k], abs=1e-4), k


def test_bf16_autocast_on_cpu_trains_and_stays_close():
    """bf16 autocast (the CUDA default) exercised on the CPU: the loss falls, and the metrics stay within
    0.05 nats of float32 training after 30 epochs."""
    fp32 = _run_longer()
    bf16 = _run_longer(bf16_cpu=True)
    assert bf16["train_loss"][-1] < 0.5 * bf16["train_loss"][0]
    for k in ("train_loss", "train_nll"):
        assert bf16.last(k) == pytest.approx(fp32.last(k), abs=0.05), k


def _run_longer(**kw):
    data = make_reversal_data(40, 1, seed=0)
    lab.seed_everything(0)
    model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=16, max_len=3))
    loop = epoch_loop(dict(epochs=30, batch_size=17, lr=1e-2, eval_every=10), len(data.train), "cpu",
                      progress=False, **kw)
    return train_one(model, data.train, loop, 17, 0, {"train": data.train})


def test_the_loop_steps_one_optimizer_in_one_place():
    from pathlib import Path

    lib = Path(lab.__file__).parent
    hits = [(p.name, i) for p in lib.rglob("*.py") for i, line in enumerate(p.read_text().splitlines())
            if "optimizer.step()" in line or "opt.step()" in line]
    assert hits == [("train.py", hits[0][1])]


# --- shortest paths: pre-training then fine-tuning, and perturb-and-retrain, interrupted and resumed ---
KW = dict(max_vertices=8, max_tune_vertices=6)


def _paths(tmp_path=None, stop_at=None):
    torch.manual_seed(0)
    model = spm.PathTransformer(8, 16, 2, 2, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    schedule = spm.step_schedule(1e-3, 1e-4, 2, 6)

    def stop(step, _m):
        if step == stop_at:
            raise KeyboardInterrupt

    ck = (lambda name: None) if tmp_path is None else (lambda name: tmp_path / name)
    pre = spm.train_steps(model, opt, "pretrain", 10, 16, gen, schedule=schedule, data_kw=KW, grad_clip=1.0,
                          on_step=stop, checkpoint=ck("pre.pt"), checkpoint_every=3)
    fine = spm.train_steps(model, opt, "finetune", 4, 8, gen, data_kw=KW, checkpoint=ck("fine.pt"))
    return pre, fine, model


def test_shortest_path_training_resumes_to_the_same_result(tmp_path):
    pre, fine, model = _paths()
    with pytest.raises(KeyboardInterrupt):
        _paths(tmp_path, stop_at=7)                # after the step-6 checkpoint
    pre2, fine2, model2 = _paths(tmp_path)
    for a, b in ((pre, pre2), (fine, fine2)):           # NaN marks a label group absent from a batch
        assert a.keys() == b.keys()
        for k in a.keys():
            assert [str(x) for x in a[k]] == [str(x) for x in b[k]], k
    assert len(pre.step) == 10 and pre.step[0] == 0 and set(pre.by_label) == set(spm.LABEL_GROUPS)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_perturb_and_retrain_resumes_to_the_same_losses(tmp_path, monkeypatch):
    straight = hc.perturb_and_retrain(5, 3, 6, 16, 1e-2, kind="read_k")
    assert len(straight["losses"]) == 7 and all(math.isfinite(x) for x in straight["losses"])
    original, calls = hc.random_graphs, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:                        # step 4, after the step-3 checkpoint
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(hc, "random_graphs", flaky)
    with pytest.raises(KeyboardInterrupt):
        hc.perturb_and_retrain(5, 3, 6, 16, 1e-2, kind="read_k", checkpoint=tmp_path / "p.pt", checkpoint_every=3)
    monkeypatch.setattr(hc, "random_graphs", original)
    resumed = hc.perturb_and_retrain(5, 3, 6, 16, 1e-2, kind="read_k", checkpoint=tmp_path / "p.pt",
                                     checkpoint_every=3)
    assert resumed == straight


def test_checkpoints_run_no_code_and_bad_ones_are_one_line(tmp_path):
    """Checkpoints are read with weights_only=True: a pickle that would run code is refused (and does not
    run); a truncated file, or one of another format, is one error naming the file and what to do."""
    import pickle

    planted = tmp_path / "planted.pt"
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    with open(planted, "wb") as f:
        pickle.dump({"format": lab.train.CHECKPOINT_FORMAT, "x": Payload()}, f)
    with pytest.raises(lab.train.CheckpointError, match=f"checkpoint {planted} cannot be read.*delete it"):
        _reversal_run(checkpoint_path=planted)
    assert not ran.exists()
    reference = _reversal_run(checkpoint_path=tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "good.pt").read_bytes()[:1000])
    with pytest.raises(lab.train.CheckpointError, match=f"checkpoint {cut} cannot be read"):
        _reversal_run(checkpoint_path=cut)
    old = tmp_path / "old.pt"
    torch.save({"model": {}, "epoch": 2}, old)     # what the trainers wrote before the shared loop
    with pytest.raises(lab.train.CheckpointError, match="is not a reasoning-lab-fit-2 checkpoint"):
        _reversal_run(checkpoint_path=old)
    again = _reversal_run(checkpoint_path=tmp_path / "good.pt")      # finished: loaded, not trained
    assert again.data == reference.data and again.finished_before


def test_sigint_stops_at_the_end_of_a_step_with_a_checkpoint_and_resumes_exactly(tmp_path):
    """SIGINT during fit: the step in progress finishes, the checkpoint is written at that step, and
    KeyboardInterrupt is raised; the same call resumes and ends as an uninterrupted run."""
    import os
    import signal

    reference = _run_longer()
    sent = {}

    def hook(done, _h):
        if done == 12 and not sent:
            sent["at"] = done
            os.kill(os.getpid(), signal.SIGINT)     # arrives during this step's bookkeeping
    data = make_reversal_data(40, 1, seed=0)

    def run(hooks=()):
        lab.seed_everything(0)
        model = Transformer(ModelConfig(vocab_size=data.vocab_size, n_layers=1, n_heads=2, d_model=16, max_len=3))
        loop = epoch_loop(dict(epochs=30, batch_size=17, lr=1e-2, eval_every=10), len(data.train), "cpu",
                          tmp_path / "ck.pt", progress=False)
        from reasoning_lab.epochs import EpochBatches, AnswerCrossEntropy
        from reasoning_lab.evaluate import evaluate
        batches = EpochBatches(len(data.train), 17, [0])
        spe = batches.steps_per_epoch
        return lab.fit(model, batches, AnswerCrossEntropy(model, data.train, False, torch.device("cpu")), loop,
                       evaluate=lambda done: {"epoch": done // spe, **evaluate(model, {"train": data.train})},
                       hooks=hooks)[0]

    with pytest.raises(KeyboardInterrupt, match="after step 12 of 30"):
        run([hook])
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert state["step"] == 12
    resumed = run()
    assert resumed.start_step == 12
    assert resumed.data == reference.data
