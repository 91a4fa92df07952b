"""One experiment, one definition: every entrance trains the same run.

For every experiment with a training run and a ``paper`` preset, the run built through the chapter's
session (``lab.start`` + ``run.train()``, what the notebook does), through ``reasoning-lab train``, for a
sweep point and by the GPU check has the same parameters and, trained a few steps at the preset's width,
the same losses and weights. And ``reasoning-lab train`` under ``torchrun`` with two processes trains what
one process trains with the same global batch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reasoning_lab import experiments
from reasoning_lab.experiments import cli, runner, session

# The paper presets at their width, shrunk in depth, seeds and length so that a few steps run in seconds.
SHRINK = {
    "reversal-curse": {"n_layers": 1, "seeds": 2, "epochs": 1},
    "reversal-in-context": {"n_layers": 1, "seeds": 1, "epochs": 1, "n_a": 20},
    "reversal-fixes": {"n_layers": 1, "seeds": 1, "epochs": 1, "masked_epochs": 1,
                       "methods": ["baseline", "reversed_relations", "masked"]},
    "chain-of-thought": {"n_layers": 1, "seeds": 1, "epochs": 1},
    "chain-related-tokens": {"n_layers": 1, "seeds": 1, "epochs": 1},
    "capacity": {"n_profiles": 200, "budgets": [500_000], "exposures": 0.05},
    "capacity-probes": {"n_profiles": 200, "n_layers": 2, "exposures": 0.5, "probe_questions": 200},
    "shortest-paths": {"n_layers": 2, "batch_size": 64, "pretrain_steps": 3, "finetune_steps": 2,
                       "finetune_batch": 64, "eval_batch": 64},
    "bfs-handcrafted": {"test_graphs": 64, "perturb_seeds": 2, "perturb_steps": 3, "perturb_batch": 16},
}


def _trained_experiments():
    return [e.name for e in experiments.available() if e.trainer]


def test_every_trained_experiment_with_a_paper_preset_is_covered():
    assert set(SHRINK) == {n for n in _trained_experiments() if "paper" in experiments.get(n).presets}
    untrained = sorted(e.name for e in experiments.available() if not e.trainer)
    assert untrained == ["bilinear-dynamics", "one-layer-dynamics"]     # they integrate their dynamics


def _same(x: dict, y: dict) -> bool:
    """Equal dicts, NaN equal to NaN."""
    import math

    nan = lambda v: isinstance(v, float) and math.isnan(v)
    return x.keys() == y.keys() and all(x[k] == y[k] or (nan(x[k]) and nan(y[k])) for k in x)


def _args(overrides: dict) -> list[str]:
    return [x for k, v in overrides.items()
            for x in ("-p", f"{k}={json.dumps(v) if isinstance(v, list) else v}")]


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_session_train_sweep_and_gpu_check_build_the_same_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONING_LAB_THREADS", "1")
    overrides = {**SHRINK[name], "device": "cpu"}
    exp = experiments.get(name)
    p = exp.resolve("paper", overrides)

    # the chapter's session, as the notebook starts it (papermill puts the parameters in its namespace)
    run = session.start(name, {**p, "output_dir": str(tmp_path / "session")})
    a = run.train(progress=False)
    run.folder.close()

    # reasoning-lab train, in-process
    assert cli.main(["train", name, "--preset", "paper", *_args(overrides), "--out", str(tmp_path / "cli")]) == 0
    saved = json.loads((tmp_path / "cli" / "params.json").read_text())
    assert {k: v for k, v in saved.items() if k != "output_dir"} == \
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items() if k != "output_dir"}
    history = json.loads((tmp_path / "cli" / "history.json").read_text())
    timeless = lambda hs: json.dumps([{k: v for k, v in h.items() if k != "seconds"} for h in hs],
                                     sort_keys=True)              # wall time differs; NaN reads as NaN
    assert timeless(h["data"] for h in history) == timeless(h.data for h in a.histories)
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert _same({k: metrics[k] for k in a.metrics}, a.metrics)
    for ckpt in (tmp_path / "cli" / "checkpoints").glob("*.pt"):
        mine = tmp_path / "session" / "checkpoints" / ckpt.name
        x, y = (torch.load(f, weights_only=True)["model"] for f in (ckpt, mine))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), ckpt.name

    # a sweep point resolves and checks its parameters as `run` and `train` do
    assert runner.prepare(name, "paper", overrides)[1] == p

    # the GPU check resolves the preset the same way and trains through Experiment.train (see
    # tests/test_gpu_check.py::test_every_timed_run_is_the_experiments_own_run)


def _torchrun(tmp_path: Path, out: Path, nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "REASONING_LAB_THREADS": "1", "OMP_NUM_THREADS": "1", "REASONING_LAB_QUIET": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "reasoning_lab.experiments.cli", "train", *args, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


def test_capacity_trains_data_parallel_as_one_process(tmp_path):
    """Two gloo ranks under torchrun take the global batch in halves of the same draw: the losses of the
    first steps are those of one process within float rounding, and the final metrics within noise; the
    chapter then renders from the trained folder without training again."""
    args = ["capacity", *_args({"n_profiles": 100, "budgets": [30000], "exposures": 5, "device": "cpu"})]
    res = _torchrun(tmp_path, tmp_path / "A", 2, args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert cli.main(["train", *args, "--out", str(tmp_path / "B")]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "AB")
    assert a["world_size"] == 2 and b["world_size"] == 1 and a["distributed"] == 1
    assert a["bits_per_param"] == pytest.approx(b["bits_per_param"], rel=0.01)
    ha, hb = (json.loads((tmp_path / d / "history.json").read_text())[0]["data"] for d in "AB")
    assert ha["step"] == hb["step"] and len(ha["step"]) >= 4
    for x, y in list(zip(ha["train_loss"], hb["train_loss"]))[:4]:
        assert x == pytest.approx(y, rel=1e-5)
    assert json.loads((tmp_path / "A" / "run.json").read_text())["status"] == "trained"
    # the chapter renders from B without training again, and ends with B's metrics
    overrides = dict(a.split("=", 1) for a in args[2::2])
    rendered = runner.execute("capacity", "default", overrides, tmp_path / "B")
    assert {k: rendered[k] for k in ("params", "capacity_bits", "bits_per_param", "dataset_entropy_bits")} == \
        {k: b[k] for k in ("params", "capacity_bits", "bits_per_param", "dataset_entropy_bits")}
    notebook = json.loads((tmp_path / "B" / "capacity.ipynb").read_text())
    assert "trained earlier: loaded the finished checkpoint, no training" in json.dumps(notebook)
    bad = _torchrun(tmp_path, tmp_path / "C", 2, ["reversal-curse", "-p", "epochs=1"])   # torchrun exits 1
    assert bad.returncode != 0 and "does not train data-parallel" in bad.stderr
