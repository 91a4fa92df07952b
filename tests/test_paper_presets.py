"""Every `paper` preset's model at full size, a step or an epoch of its own run on the CPU (slow: minutes).

The GPU check (bench/gpu_check.py) times these presets on a GPU; this test makes sure, without one, that
each of them builds at its real width and depth and trains through its experiment's run
(``Experiment.train``, what every entrance calls). Run it with ``make test-slow`` (or
``RUN_SLOW=1 pytest -m slow tests``)."""
import math

import pytest
import torch

from reasoning_lab import experiments

pytestmark = pytest.mark.slow


def _train(name: str, loop: dict | None = None, **overrides):
    exp = experiments.get(name)
    p = exp.resolve("paper", {"device": "cpu", **overrides})
    return p, exp.train(p, torch.device("cpu"), progress=False, **{"eval_every": 0, **(loop or {})})


@pytest.mark.parametrize("name", ["reversal-curse", "chain-of-thought", "reversal-in-context"])
def test_gpt2_paper_models_train_an_epoch(name):
    p, t = _train(name, seeds=1, epochs=1)
    assert p["n_layers"] == 24 and p["embed_dim"] == 768 and len(t.models) == 1
    if name == "reversal-curse":
        assert t.model.num_params() == 172_128_768          # the original's GPT-2, 1,024 position rows
    assert math.isfinite(t.history.last("train_loss")) and t.history.last("train_loss") > 0


def test_capacity_largest_paper_model_trains_a_few_steps():
    # the preset's vocabulary (it sets the model's width) and largest budget; fewer profiles than the
    # preset's 10,000 only to keep the evaluation after the steps short
    p, t = _train("capacity", n_profiles=1000, budgets=[10_000_000], exposures=1.0,
                  loop={"steps": 2, "eval_every": 2})
    assert 0.9 * 10_000_000 < t.model.num_params() <= 10_000_000 and t.model.cfg.n_layers == 4
    assert t.history.seconds > 0 and math.isfinite(t.history.final["train_onehop_loss"])


def test_shortest_paths_paper_model_trains_a_step():
    # the preset's 11-layer model; a batch of 2,048 graphs, not 32,768: on the CPU the activations of the
    # full batch would need about 22 GB (0.67 GB per 1,024 graphs, measured), more than a 24 GiB machine has
    p, t = _train("shortest-paths", batch_size=2048, pretrain_steps=1, finetune_steps=0, eval_batch=256)
    assert p["n_layers"] == 11 and p["embed_dim"] == 64 and p["ff_dim"] == 256
    assert len(t.history.loss) == 1 and math.isfinite(t.history.loss[0])
