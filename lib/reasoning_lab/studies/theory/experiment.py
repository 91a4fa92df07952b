"""Experiments of the theory study: the bilinear model and the one-layer transformer."""
from __future__ import annotations

from ...experiments import cost
from ...experiments.params import Float, Int, Seq
from ...experiments.registry import Claim, Experiment, register


def _bilinear_vocab(p: dict) -> None:
    if p["vocab"] < 2 * p["n_pairs"]:
        raise ValueError(f"parameter vocab={p['vocab']} is not allowed: expected at least 2*n_pairs = {2 * p['n_pairs']}")


def _one_layer_sizes(p: dict) -> None:
    if p["n_heldout"] >= p["n_pairs"]:
        raise ValueError(f"parameter n_heldout={p['n_heldout']} is not allowed: expected fewer than "
                         f"n_pairs={p['n_pairs']}")
    if p["vocab"] < 3 * p["n_pairs"] + 2:
        raise ValueError(f"parameter vocab={p['vocab']} is not allowed: expected at least 3*n_pairs + 2 = "
                         f"{3 * p['n_pairs'] + 2} (the chain task's tokens)")


def _bilinear_cost(p: dict) -> cost.Cost:
    d, m, S = max(p["dims"]), p["vocab"], p["seeds"]
    memory = 8.0 * S * (m * d + 3 * d * d) + 8.0 * p["rate_seeds"] * m * 4 * d
    flops = 2.0 * p["steps"] * S * sum(m * dd * dd + m * m * dd for dd in p["dims"])
    return cost.Cost(memory, flops, f"{S} seeds of d up to {d:,} with m = {m:,} (float64)")


def _one_layer_cost(p: dict) -> cost.Cost:
    m = p["vocab"]
    return cost.Cost(8.0 * 12 * m * m, 4.0 * p["steps"] * m * m * p["n_pairs"], f"{m:,} x {m:,} matrices")


register(Experiment(
    "bilinear-dynamics", "Training dynamics of the bilinear model",
    rules={"dims": Seq(Int(2, 65536)), "n_pairs": Int(1, 2000), "vocab": Int(2, 20000),
           "lr": Float(0.0, 1000.0, open_lo=True), "steps": Int(1, 10_000_000), "seeds": Int(1, 1000),
           "rate_seeds": Int(2, 100_000)},
    presets={"paper": {"dims": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096], "lr": 1.0, "steps": 20000,
                       "seeds": 20, "rate_seeds": 1000}},
    checks=(_bilinear_vocab,),
    metrics=("train_loss_ratio", "reverse_loss_ratio", "epsilon"),
    claims=(Claim("train_loss_ratio < reverse_loss_ratio"),),
    cost=_bilinear_cost,
    preset_origin="The paper proves its result for gradient flow and gives no numerical configuration; the "
                  "preset widens the default's sweep to d = 4,096 with 20 seeds and 20,000 steps.",
))

register(Experiment(
    "one-layer-dynamics", "One-layer transformer dynamics: asymmetric growth and intransitivity",
    rules={"n_pairs": Int(2, 5000), "n_heldout": Int(1, 5000), "vocab": Int(4, 20000),
           "lr_y": Float(0.0, 1000.0, open_lo=True), "lr_z": Float(0.0, 1000.0), "steps": Int(1, 10_000_000)},
    presets={"paper": {"n_pairs": 200, "n_heldout": 60, "vocab": 802, "lr_y": 2.0, "lr_z": 2.0, "steps": 20000}},
    checks=(_one_layer_sizes,),
    metrics=("forward_weight", "reverse_weight", "indirect_weight"),
    claims=(Claim("forward_weight > max(reverse_weight, indirect_weight)"),),
    cost=_one_layer_cost,
    preset_origin="The paper's one-layer result is a theorem; it gives no numerical configuration. The "
                  "preset is the reversal task's original size (200 pairs, 60 held out, vocabulary 802) "
                  "with our step sizes.",
))
