"""Figures and tables of the reversal chapters (the curse, reversal in context, the fixes)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ... import plots
from ...plots import attention_figure  # noqa: F401  (fg.attention_figure)
from . import task as rv

GROUP_TITLES = {"train_forward": "train, forward  (A → ?)", "train_backward": "train, backward  (B ← ?)",
                "valid_seen": "held-out pairs, seen direction",
                "valid_unseen": "held-out pairs, unseen direction"}


def heatmap_grid(mats: dict[str, torch.Tensor], suptitle: str, titles: dict[str, str] | None = None):
    """The four logit matrices of :func:`.task.logit_matrices` in a 2 x 2 grid on one colour scale."""
    import matplotlib.pyplot as plt

    titles = titles or GROUP_TITLES
    lo = min(float(m.min()) for m in mats.values())
    hi = max(float(m.max()) for m in mats.values())
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5))
    for ax, (key, m) in zip(axes.flat, mats.items()):
        plots.heatmap(ax, m, titles.get(key, key), "candidate answer j", "question i", vmin=lo, vmax=hi,
                      colorbar_label="logit")
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def curse_player(frames, history, n_pairs: int, epochs: int):
    """The training player of the reversal curse: logits of the trained direction and of the held-out
    reverse questions over training, next to the first seed's loss curves."""
    curves = {"training sentences": (history["epoch"], history["train_nll"]),
              "held-out reversed sentences": (history["epoch"], history["valid_nll"])}
    return plots.training_player(
        frames, {k: GROUP_TITLES[k] for k in ("train_forward", "valid_unseen")}, curves,
        total=epochs, panel_labels=("candidate answer j", "question i"), chance=float(np.log(n_pairs)),
        curve_title="loss (first seed)")


def diagonal_table(views: dict[str, dict[str, torch.Tensor]]) -> dict[str, tuple[float, float]]:
    """``{"diag_acc_<view>_<group>": (diagonal accuracy, its chance level 1/rows)}`` for each view's
    matrices (``views``: ``{"relation": mats, "first": mats}``)."""
    return {f"diag_acc_{view}_{key}": (rv.diagonal_accuracy(m), 1 / len(m))
            for view, mats in views.items() for key, m in mats.items()}


def gaussian_density(xs: np.ndarray, sd: float) -> np.ndarray:
    return np.exp(-xs ** 2 / (2 * sd ** 2)) / (sd * np.sqrt(2 * np.pi))


def cosine_figure(init_embedding: torch.Tensor, trained_embedding: torch.Tensor, ids: torch.Tensor):
    """Cosine maps of the input embeddings at initialisation and after training (rows ``ids``), and the
    histogram of their off-diagonal entries with the dashed N(0, 1/d) density of random vectors.
    Returns the figure and ``{"cos_offdiag_std_init", "_trained", "_theory"}``."""
    import matplotlib.pyplot as plt

    d = init_embedding.shape[1]
    cos = {"initialisation": rv.cosine_matrix(init_embedding[ids]),
           "trained": rv.cosine_matrix(trained_embedding.detach().cpu()[ids])}
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    for ax, (name, m) in zip(axes, cos.items()):
        title = "embeddings " + ("at initialisation" if name == "initialisation" else "after training")
        plots.heatmap(ax, m, title, "token", "token", vmin=-1, vmax=1, cmap="RdBu_r",
                      colorbar_label="cosine similarity")
    bins = np.linspace(-0.6, 0.6, 121)
    for name, m in cos.items():
        axes[2].hist(rv.off_diagonal(m).numpy(), bins=bins, density=True, histtype="step", lw=1.5,
                     label=name)
    xs = np.linspace(-0.6, 0.6, 400)
    sd = 1 / np.sqrt(d)
    axes[2].plot(xs, gaussian_density(xs, sd), "k--", lw=1, label=f"N(0, 1/d), d = {d}")
    axes[2].set(xlabel="cosine of two different tokens", ylabel="density",
                title="off-diagonal entries")
    axes[2].set_ylim(0, 1.7 * axes[2].get_ylim()[1])   # room above the curves for the legend
    axes[2].legend(fontsize=9, loc="upper left")
    fig.suptitle("Rows: relation tokens 0, 1, then the A alphabet, then the B alphabet")
    fig.tight_layout()
    stats = {"cos_offdiag_std_init": float(rv.off_diagonal(cos["initialisation"]).std()),
             "cos_offdiag_std_trained": float(rv.off_diagonal(cos["trained"]).std()),
             "cos_offdiag_std_theory": float(sd)}
    return fig, stats


# ------------------------------------------------------------------------------------ the fixes


def method_table(results: dict) -> dict[str, dict[str, np.ndarray]]:
    """``{"train": {method: per-seed final train_prob}, "valid": {method: per-seed valid_prob}}`` of
    each method's run (:func:`.runs.fixes`: ``extra["methods"]``)."""
    return {split: {m: np.array([h.last(f"{split}_prob") for h in run.histories])
                    for m, run in results.items()} for split in ("train", "valid")}


def format_method_table(table: dict[str, dict[str, np.ndarray]], chance: float) -> str:
    lines = [f"{'method':>18}  {'train prob':>10}  {'held-out prob':>13}   per seed"]
    for m, valid in table["valid"].items():
        seeds = ", ".join(f"{v:.3g}" for v in valid)
        lines.append(f"{m:>18}  {table['train'][m].mean():10.4f}  {valid.mean():13.4f}   [{seeds}]")
    lines.append(f"{'chance':>18}  {'':10}  {chance:13.4f}")
    return "\n".join(lines)


def fixes_figure(results: dict[str, list], chance: float, n_pairs: int):
    """Held-out probability by method (bars: mean over seeds, dots: seeds; log scale) and the held-out
    loss during training (band over seeds) against the fraction of each method's training."""
    import matplotlib.pyplot as plt

    valid = method_table(results)["valid"]
    methods = list(valid)
    floor = 1e-14
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    ax = axes[0]
    x = np.arange(len(methods))
    ax.bar(x, np.maximum([valid[m].mean() for m in methods], floor), color="tab:blue", alpha=0.6,
           label="held-out probability (mean over seeds)")
    for i, m in enumerate(methods):
        ax.plot(np.full(len(valid[m]), i), np.maximum(valid[m], floor), "k.", ms=8,
                label="one seed" if i == 0 else None)
    ax.axhline(chance, color="grey", ls="--", label="chance (uniform guess)")
    ax.set_yscale("log")
    ax.set_ylim(max(floor, min(1e-6, min(v.min() for v in valid.values()) / 3)), 2)
    ax.set_xticks(x, methods, rotation=30, ha="right")
    ax.set(ylabel="probability of the right answer", title="Held-out reverse questions, by method")
    ax.legend(fontsize=9, loc="lower right")
    ax = axes[1]
    for m in methods:
        hs = results[m].histories
        frac = np.array(hs[0]["epoch"]) / hs[0]["epoch"][-1]
        plots.band(ax, frac, [h["valid_nll"] for h in hs], m)
    ax.axhline(np.log(n_pairs), color="grey", ls="--", label="chance")
    ax.set(xlabel="fraction of training", ylabel="held-out NLL (nats)", yscale="log",
           title="Held-out loss during training")
    ax.legend(fontsize=9, ncol=2)
    fig.tight_layout()
    return fig


def glue_values(**values) -> None:
    """Glue every value for the prose (``reasoning_lab.prose.glue``: a name an ``{eval}`` expression
    in the text can quote). Returns nothing, so that a cell ending with it shows no output."""
    from reasoning_lab.prose import glue_all

    glue_all(values)


def describe_data(data: rv.ReversalData) -> str:
    """What a reversal data set holds, in four lines: pairs, sentences, one example, chance."""
    k = data.a.shape[1]
    n_fwd = int(data.valid_forward_seen.sum())
    return "\n".join([
        f"{data.n_pairs} pairs of {k}-token entities: {len(data.train_pairs)} trained both ways, "
        f"{len(data.valid_pairs)} held out in one direction",
        f"{len(data.train)} training sentences, {len(data.valid)} held out: "
        f"{len(data.valid) - n_fwd} ask 'A → ?', {n_fwd} ask 'B ← ?'",
        f"a training sentence: {data.train.tokens[0].tolist()}  (0 = →, 1 = ←)",
        f"chance: 1/{data.n_pairs} = {data.chance_prob:.4f} (uniform over the candidates)"])


def describe_icl(data) -> str:
    """What an in-context reversal data set holds: sizes, one sentence of each split, chance."""
    return "\n".join([
        f"{len(data.train)} training sentences, {len(data.valid)} held-out sentences, "
        f"model vocabulary {data.vocab_size}",
        f"a training sentence: {data.train.tokens[0].tolist()}  (0 = →, 1 = ←, 2 = ↔)",
        f"a held-out sentence: {data.valid.tokens[0].tolist()}",
        f"chance: {data.chance_prob:.3f} (a uniform guess among the {len(data.a)} A tokens)"])


def method_glue(table: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Names for the prose: ``<method>_train``, ``<method>_valid`` (means over seeds) and
    ``<method>_valid_<i>`` (seed ``i`` of the run, counted from 0)."""
    out: dict[str, float] = {}
    for m, valid in table["valid"].items():
        out[f"{m}_train"] = float(table["train"][m].mean())
        out[f"{m}_valid"] = float(valid.mean())
        out.update({f"{m}_valid_{i}": float(v) for i, v in enumerate(valid)})
    return out
