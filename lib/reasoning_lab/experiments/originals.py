"""The originals' full-size configurations that several studies share, with where each value comes from.

A ``paper`` preset holds the original's configuration where the original gives one; each experiment
declares, for every parameter of that preset, the original's value and its source (``Original``), and
for every parameter where the preset departs from it, why (``Experiment.departures``). The book's preset
table is generated from these declarations (:func:`reasoning_lab.experiments.presets.rows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Original:
    """The original's value of one setting and where it is stated (a file and flag, or the paper)."""
    value: Any
    source: str


_ZHU = "marlo-z/reversal_curse_analysis"

# Zhu et al. 2024: the GPT-2 every script of the original trains (train_reverse, train_reverse_ICL,
# train_chain, ...): 24 layers, 12 heads, width 768, 3,000 epochs of batch 64, AdamW at 0.01 with
# PyTorch's default weight decay 0.01 (the --decay flag is parsed but never used), dropout 0.1 and 1,024
# position rows (GPT-2's defaults), untied output layer (the subclass replaces the transformer after the
# tie), absolute positions, 10 seeds (the paper's figures).
ZHU2024_GPT2: dict[str, Original] = {
    "n_layers": Original(24, f"{_ZHU}, scripts' --n_layers default"),
    "n_heads": Original(12, f"{_ZHU}, scripts' --n_heads default"),
    "embed_dim": Original(768, f"{_ZHU}, scripts' --n_embd default"),
    "vocab_size": Original(800, f"{_ZHU}, scripts' --vocab_size default"),
    "epochs": Original(3000, f"{_ZHU}, scripts' --num_epochs default"),
    "batch_size": Original(64, f"{_ZHU}, scripts' --batch_size default"),
    "lr": Original(0.01, f"{_ZHU}, scripts' --lr default (AdamW)"),
    "weight_decay": Original(0.01, "PyTorch AdamW default: the scripts' --decay is never passed on"),
    "betas": Original([0.9, 0.999], "PyTorch AdamW default"),
    "dropout": Original(0.1, "HF GPT2Config default (embeddings, attention, residual)"),
    "seeds": Original(10, "Zhu et al. 2024, Fig. 1: averages over 10 seeds"),
    "tie_embeddings": Original(False, f"{_ZHU}, src/model: the output layer is never re-tied"),
    "pos_encoding": Original("absolute", f"{_ZHU}, scripts' --pos_encode_type default"),
    "max_len": Original(1024, "HF GPT2Config default n_positions"),
}


def values(originals: dict[str, Original]) -> dict[str, Any]:
    """The values alone (a preset)."""
    return {k: o.value for k, o in originals.items()}
