"""A sweep over model sizes at a fixed dataset: train each model, measure its capacity, tabulate."""
from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import torch

from ...model import Transformer, count_params
from ...io import write_csv
from .entropy import (DatasetEntropy, capacity, capacity_by_subject, capacity_parts, dataset_entropy,
                      two_hop_capacity)
from .questions import QuestionBank
from .sizing import config_for_budget, formula_count
from ...train import History
from .train import CapacityConfig, subject_bits, train_capacity


def steps_for(exposures: float, bank: QuestionBank, cfg: CapacityConfig) -> int:
    """Steps that show every 1-hop fact ``exposures`` times on average."""
    frac1 = 1.0 - (1.0 / (1.0 + cfg.hop_ratio) if cfg.two_hop else 0.0)
    return max(1, math.ceil(exposures * bank.n * bank.K / (cfg.batch_size * frac1)))


def train_model(bank: QuestionBank, budget: int, n_layers: int, cfg: CapacityConfig, seed: int = 0,
                checkpoint=None) -> tuple[Transformer, History]:
    mcfg = config_for_budget(budget, n_layers, len(bank.profiles.vocab))
    torch.manual_seed(seed)
    model = Transformer(mcfg)
    res = train_capacity(model, bank, replace(cfg, seed=seed, checkpoint_path=checkpoint,
                                              checkpoint_every=max(1, cfg.steps // 5) if checkpoint else 0))
    return model, res


def _train_job(bank: QuestionBank, budget: int, n_layers: int, cfg: CapacityConfig, seed: int, checkpoint,
               threads: int) -> tuple[dict, History]:
    """One model in a worker process (one thread each: tiny models scale better over processes)."""
    torch.set_num_threads(max(1, threads))
    model, res = train_model(bank, budget, n_layers, replace(cfg, progress=False), seed, checkpoint)
    return model.state_dict(), res


def train_models(bank: QuestionBank, budgets, n_layers: int, cfg: CapacityConfig, seed: int = 0,
                 checkpoint=None, workers: int = 1, threads: int = 1) -> list[tuple[Transformer, History]]:
    """``train_model`` for every budget, in order. With ``workers > 1`` (CPU only) the models train at the
    same time in that many processes, largest first; each model's result is the same as when trained alone.
    ``checkpoint(budget)`` gives each model's checkpoint path (or None)."""
    ckpt = checkpoint or (lambda budget: None)
    if workers <= 1 or len(budgets) <= 1 or torch.device(cfg.device).type != "cpu":
        return [train_model(bank, b, n_layers, cfg, seed, ckpt(b)) for b in budgets]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    order = sorted(range(len(budgets)), key=lambda i: -budgets[i])
    with ProcessPoolExecutor(max_workers=min(workers, len(budgets)), mp_context=mp.get_context("spawn")) as pool:
        jobs = {i: pool.submit(_train_job, bank, budgets[i], n_layers, cfg, seed, ckpt(budgets[i]), threads)
                for i in order}
        out = []
        for i, b in enumerate(budgets):
            state, res = jobs[i].result()
            model = Transformer(config_for_budget(b, n_layers, len(bank.profiles.vocab)))
            model.load_state_dict(state)
            out.append((model.eval(), res))
    return out


def capacity_history(res: History, bank: QuestionBank, ent: DatasetEntropy) -> list[float]:
    """1-hop capacity (bits) at every evaluation of a training run."""
    out = []
    for i in range(len(res["step"])):
        losses = {s: res[f"train_onehop_bits_{s}"][i] for s in bank.subjects}
        out.append(capacity(losses, ent))
    return out


def model_row(model: Transformer, res: History, bank: QuestionBank, schemes: dict[str, DatasetEntropy],
              main: str = "optimal", two_hop_scheme: str = "big-hash") -> dict[str, float | int | str]:
    """One line of the results table: sizes, exposures, losses and capacity under every scheme."""
    cfg = model.cfg
    P = model.num_params()
    losses = subject_bits(res, "train_onehop", bank.subjects)
    ent = schemes[main]
    row = {"params": P, "non_embedding_params": count_params(cfg)["non_embedding"],
           "original_formula_params": formula_count(cfg), "d_model": cfg.d_model, "n_layers": cfg.n_layers,
           "n_heads": cfg.n_heads, "steps": int(res["step"][-1]),
           "exposures": res["exposures"][-1], "seconds": round(res.seconds, 1),
           "onehop_loss_nats": res.final["train_onehop_loss"], "onehop_accuracy": res.final["train_onehop_acc"]}
    cap = capacity(losses, ent)
    row.update(capacity_bits=cap, bits_per_param=cap / P, dataset_entropy_bits=ent.one_hop)
    parts = capacity_parts(losses, ent)
    row.update(capacity_facts_bits=parts["facts"], capacity_selection_bits=parts["selection"])
    for name, e in schemes.items():
        row[f"capacity_{name}"] = capacity(losses, e)
        row[f"capacity_{name}_unclamped"] = capacity(losses, e, clamp=False)
    for s, v in capacity_by_subject(losses, ent).items():
        row[f"capacity_{s}"] = v
    for s, v in losses.items():
        row[f"loss_bits_{s}"] = v
    two = subject_bits(res, "train_twohop", bank.subjects)
    if two:
        row["two_hop_capacity_bits"] = two_hop_capacity(two, ent, two_hop_scheme)
        row["two_hop_dataset_entropy_bits"] = ent.two_hop(two_hop_scheme)
        row["two_hop_loss_nats"] = res.final["train_twohop_loss"]
        row["heldout_triples_loss_nats"] = res.final["eval_triples_loss"]
    return row


def rows_parts(rows: list[dict], ent: DatasetEntropy) -> list[dict[str, float]]:
    """Facts / selection split of saved rows (from their per-subject losses)."""
    return [capacity_parts({s: r[f"loss_bits_{s}"] for s in ent.subjects}, ent) for r in rows]


def entropies(profiles, schemes=("optimal", "enumerate", "independent")) -> dict[str, DatasetEntropy]:
    return {s: dataset_entropy(profiles, s) for s in schemes}


def read_csv(path: str | Path) -> list[dict]:
    def num(v):
        try:
            f = float(v)
            return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]
