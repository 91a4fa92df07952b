"""Every `paper` preset's model at full size, one training step each on the CPU (slow: minutes).

The GPU check (bench/gpu_check.py) times these presets on a GPU; this test makes sure, without one, that
each of them builds at its real width and depth and trains through the same entry points the notebooks
use. Run it with ``make test-slow`` (or ``RUN_SLOW=1 pytest -m slow tests``)."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


def _one_step_lm(name, sets_fn, max_len_fn, expected_params=None):
    p = gpu_check.preset(name, "paper", {"seeds": 1})
    assert p["n_layers"] == 24 and p["embed_dim"] == 768
    seeds = [p["seed"]]
    full = sets_fn(p, seeds)
    max_len = max_len_fn(p, full[0])
    train = [d.train.take(torch.arange(p["batch_size"])) for d in full]        # one batch: one AdamW step
    models = gpu_check.build_lm_models(p, full[0].vocab_size, max_len, seeds)
    if expected_params is not None:
        assert models[0].num_params() == expected_params
    before = models[0].blocks[0].attn.qkv.weight.detach().clone()
    hs = gpu_check.train_lm_seeds(p, models, train, [{"train": t} for t in train], seeds, CPU, bf16=False,
                                  compile=False, epochs=1, eval_every=1)                  # as on a CPU
    assert math.isfinite(hs[0].last("train_loss")) and hs[0].last("train_loss") > 0
    assert not torch.equal(before, models[0].blocks[0].attn.qkv.weight.detach())     # the step moved it


def test_reversal_paper_model_trains_one_step():
    _one_step_lm("reversal-curse", gpu_check.reversal_sets, lambda p, d: p["max_len"], expected_params=172_128_768)


def test_chain_paper_model_trains_one_step():
    _one_step_lm("chain-of-thought", gpu_check.chain_sets, lambda p, d: 2 * p["word_size"] + 1)


def test_capacity_largest_paper_model_trains_one_step():
    # the preset's vocabulary (it sets the model's width) and largest budget; fewer profiles than the
    # preset's 10,000 only to keep the evaluation after the step short
    p = gpu_check.preset("capacity", "paper", {"n_profiles": 1000})
    bank, cfg, _ = gpu_check.capacity_setup(p, CPU)
    budget = max(p["budgets"])
    model, res = gpu_check.capacity_train(bank, budget, p["n_layers"], cfg, steps=1)
    assert 0.9 * budget < model.num_params() <= budget and model.cfg.n_layers == 4
    assert res.seconds > 0 and math.isfinite(res.final["train_onehop_loss"])


def test_shortest_paths_paper_model_trains_one_step():
    assert gpu_check.preset("shortest-paths", "paper")["batch_size"] == 32768
    # the preset's 11-layer model; a batch of 2,048 graphs, not 32,768: on the CPU the activations of the
    # full batch would need about 22 GB (0.67 GB per 1,024 graphs, measured), more than a 24 GiB machine has
    p = gpu_check.preset("shortest-paths", "paper", {"batch_size": 2048})
    assert p["n_layers"] == 11 and p["embed_dim"] == 64 and p["ff_dim"] == 256
    model, opt, schedule, sizes = gpu_check.paths_setup(p, CPU)
    before = [q.detach().clone() for q in model.parameters()]
    log = gpu_check.paths_train(model, opt, schedule, sizes, p, 1, torch.Generator().manual_seed(0), CPU)
    assert len(log.loss) == 1 and math.isfinite(log.loss[0])
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
