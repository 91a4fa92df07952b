"""Model sizes at a fixed dataset: each trained model's capacity under every counting scheme, as a table row."""
from __future__ import annotations

import csv
from pathlib import Path

from ...io import write_csv  # noqa: F401  (sweep.write_csv, as the chapter writes its table)
from ...model import Transformer, count_params
from ...train import History
from .entropy import (DatasetEntropy, capacity, capacity_by_subject, capacity_parts, dataset_entropy,
                      two_hop_capacity)
from .questions import QuestionBank
from .sizing import formula_count
from .train import subject_bits


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
