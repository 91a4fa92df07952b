"""Figures of the capacity chapter (measured values solid, reference lines dashed)."""
from __future__ import annotations

import numpy as np


def capacity_vs_params(ax, rows: list[dict], entropy_bits: float, title: str = ""):
    P = np.array([r["params"] for r in rows], dtype=float)
    C = np.array([r["capacity_bits"] for r in rows], dtype=float)
    xs = np.geomspace(P.min() / 1.6, P.max() * 1.6, 50)
    ax.plot(P, np.maximum(C, 1.0), "o-", color="C0", lw=2, ms=7, label="measured capacity")
    ax.plot(xs, 2 * xs, "--", color="C3", label="2 bits / parameter (Allen-Zhu & Li)")
    ax.plot(xs, xs, ":", color="C3", alpha=0.6, label="1 bit / parameter")
    ax.axhline(entropy_bits, ls="--", color="grey", label="dataset entropy (all there is to store)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (exact count, embeddings included)")
    ax.set_ylabel("knowledge stored (bits)")
    ax.set_title(title or "Capacity against model size")
    ax.legend(fontsize=9, loc="lower right")
    return ax


def bits_per_param(ax, rows: list[dict]):
    P = [r["params"] for r in rows]
    b = [r["bits_per_param"] for r in rows]
    bars = ax.bar(range(len(P)), b, color="C0")
    ax.bar_label(bars, fmt="%.2f", fontsize=9)
    ax.axhline(2.0, ls="--", color="C3", label="2 bits / parameter")
    ax.set_xticks(range(len(P)), [f"{p / 1000:.0f}k\n(d={r['d_model']})" for p, r in zip(P, rows)])
    ax.set_xlabel("model (parameters, width)")
    ax.set_ylabel("capacity / parameters (bits)")
    ax.set_title("Bits stored per parameter")
    ax.set_ylim(0, 2.4)
    ax.legend(fontsize=9, loc="upper left")
    return ax


def subject_capacity(ax, rows: list[dict], entropy_by_subject: dict[str, float]):
    subjects = list(entropy_by_subject)
    x = np.arange(len(subjects))
    w = 0.8 / (len(rows) + 1)
    ax.bar(x - 0.4 + w / 2, [entropy_by_subject[s] for s in subjects], w, color="none", edgecolor="grey",
           ls="--", label="dataset entropy")
    for i, r in enumerate(rows):
        ax.bar(x - 0.4 + w * (i + 1.5), [r[f"capacity_{s}"] for s in subjects], w,
               label=f"{r['params'] / 1000:.0f}k params")
    ax.set_xticks(x, [s.replace("_", "\n") for s in subjects], fontsize=9)
    ax.set_ylabel("bits stored")
    ax.set_title("Capacity per subject")
    ax.legend(fontsize=9)
    return ax


def capacity_curves(ax, curves: list[tuple[str, list[float], list[float]]], entropy_bits: float):
    """``curves``: (label, exposures, capacity) per model."""
    for label, x, c in curves:
        ax.plot(x, c, "o-", ms=3, label=label)
    ax.axhline(entropy_bits, ls="--", color="grey", label="dataset entropy")
    ax.set_xlabel("exposures per 1-hop fact")
    ax.set_ylabel("capacity (bits)")
    ax.set_title("Capacity during training")
    ax.legend(fontsize=9)
    return ax


def capacity_vs_params_figure(rows: list[dict], entropy_bits: float, title: str = ""):
    """The chapter's first figure: measured capacity against parameters, with reference lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    capacity_vs_params(ax, rows, entropy_bits, title=title)
    return fig


def training_figure(rows: list[dict], curves, entropy_bits: float):
    """Bits per parameter of each model (left) and capacity during training (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    bits_per_param(axes[0], rows)
    capacity_curves(axes[1], curves, entropy_bits)
    return fig


def subject_figure(rows: list[dict], entropy_by_subject: dict[str, float]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    subject_capacity(ax, rows, entropy_by_subject)
    return fig
