"""Figures, tables and the saved sweep of the chain chapters (chain of thought, related tokens)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ... import plots
from ...experiments.registry import DATA
from ...evaluate import diagonal_accuracy
from . import task as chain

SWEEP_FILE = DATA / "chain-sweep.csv"

# The columns of the chain-of-thought table: metric key -> label.
SEED_COLUMNS = {"direct": "direct p(C | A ↝)", "two_step": "two-step p(B | A →)·p(C | B̂ →)",
                "step1": "step 1 p(B | A →)", "step2": "step 2 p(C | B̂ →)",
                "direct_acc": "direct accuracy", "two_step_acc": "two-step accuracy"}
# panel titles, the symbols typeset (matplotlib's mathtext)
MAP_TITLES = {"B|A": r"step 1: $B_j$ after $A_i \rightarrow$", "C|B": r"step 2: $C_j$ after $B_i \rightarrow$",
              "C|A": r"direct: $C_j$ after $A_i \rightsquigarrow$"}


def describe_chain(data: chain.ChainData) -> str:
    """Sizes, one triple (a sentence a line) and chance of an unrelated-entity chain data set."""
    one = data.train_triples[:1]
    example = [data.sentences(k, one).tokens[0].tolist() for k in ("ab", "bc", "ac")]
    return "\n".join([
        f"{data.n_triples} triples of {data.word_size}-token entities: {len(data.train_triples)} "
        f"trained with all three sentences, {len(data.valid_triples)} held out",
        f"{len(data.train)} training sentences, {len(data.valid)} held-out sentences 'A ↝ C'",
        "one triple (0 = →, 1 = ↝):", *(f"  {e}" for e in example),
        f"chance: 1/{data.n_triples} = {data.chance_prob:.4f} (uniform over the C entities)"])


def format_seed_table(table: dict[str, list[float]], first_seed: int) -> str:
    n = len(next(iter(table.values())))
    lines = [f"{'held-out triples':<32}" + "".join(f"seed {first_seed + s:<5}" for s in range(n))
             + "mean"]
    for key, label in SEED_COLUMNS.items():
        lines.append(f"{label:<32}" + "".join(f"{v:<10.4f}" for v in table[key])
                     + f"{np.mean(table[key]):.4f}")
    return "\n".join(lines)


def chain_player(frames, history, n_triples: int, epochs: int):
    """The training player of the chain chapter: the held-out triples' logit maps of the two single
    steps and of the direct question, next to the first seed's loss curves."""
    curves = {label: (history["epoch"], history[f"{split}_nll"])
              for split, label in (("train", "training sentences"), ("step1", "step 1"),
                                   ("step2", "step 2"), ("valid", "direct A ↝ C"))}
    return plots.training_player(
        frames, MAP_TITLES, curves, total=epochs, panel_labels=("candidate j", "held-out query i"),
        chance=float(np.log(n_triples)), curve_ylabel="NLL (nats)",
        curve_title="held-out triples (first seed)", clip_quantile=0.01)


def direct_vs_two_step_figure(mean: dict[str, float], chance: float, n_triples: int):
    """Bars: probability of the correct C and greedy accuracy, direct vs chain of thought."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.arange(2)
    for shift, keys, label in ((-0.18, ("direct", "two_step"), "probability of the correct C"),
                               (0.18, ("direct_acc", "two_step_acc"), "greedy accuracy")):
        bars = ax.bar(x + shift, [mean[k] for k in keys], 0.36, label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.axhline(chance, color="grey", ls="--", lw=1.2, label=f"chance (1/{n_triples})")
    ax.set_xticks(x, ["direct: A ↝ ?", "chain of thought: A → B̂, B̂ → ?"])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("held-out triples, mean over seeds")
    ax.set_title("Same model, same question: answering directly vs writing the middle step")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def logit_map_figure(maps_train: dict, maps_valid: dict, title: str):
    """The original's six logit matrices (training and held-out triples x B|A, C|B, C|A) on one colour
    scale (1% quantile to maximum), each titled with how often the right answer ranks first."""
    import matplotlib.pyplot as plt

    values = torch.cat([v.flatten() for mp in (maps_train, maps_valid) for v in mp.values()])
    vmin, vmax = values.quantile(0.01).item(), values.max().item()
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.2), constrained_layout=True)
    for row, (split, maps) in enumerate((("training triples", maps_train),
                                         ("held-out triples", maps_valid))):
        for col, (name, m) in enumerate(maps.items()):
            plots.heatmap(axes[row, col], m, f"{name} ({split})\nright answer ranks first: "
                          f"{diagonal_accuracy(m):.0%}", "candidate j", "query i", vmin=vmin,
                          vmax=vmax, colorbar_label="logit")
    fig.suptitle(title)
    return fig


def position0_probs(model, data: chain.ChainData) -> tuple[float, float]:
    """On the held-out triples, after the first token of A alone (position 0): the mean probability of
    the first token of B and of the first token of C."""
    held = data.valid_triples
    first = data.a[held, :1]
    return (chain.entity_logprob(model, first, data.b[held, :1]).exp().mean().item(),
            chain.entity_logprob(model, first, data.c[held, :1]).exp().mean().item())


# ------------------------------------------------------------------------------ the saved sweep


def load_sweep(path: str | Path | None = None) -> list[dict[str, float]]:
    """The precomputed held-out-fraction x depth sweep (``book/data/chain-sweep.csv``, one row per run
    of the chain-of-thought notebook), every value a float, sorted by depth then held-out fraction."""
    path = Path(path) if path is not None else SWEEP_FILE
    with open(path, newline="") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    if not rows:
        raise ValueError(f"path={str(path)!r} holds no sweep rows")
    return sorted(rows, key=lambda r: (r["n_layers"], r["held_out_fraction"]))


def sweep_facts(rows: list[dict[str, float]]) -> dict[str, float]:
    """The numbers the chapter states about the sweep: run counts, the direct and chain-of-thought
    accuracies, and the weakest chain-of-thought run."""
    n_valid = lambda r: round(r["held_out_fraction"] * round(1 / r["chance_prob"]))
    weakest = min(rows, key=lambda r: r["valid_two_step_acc"])
    direct_right = sum(round(r["valid_acc"] * n_valid(r)) for r in rows)
    return {"n_runs": len(rows),
            "direct_right": direct_right,
            "direct_max_acc": max(r["valid_acc"] for r in rows),
            "direct_prob_max": max(r["valid_prob"] for r in rows),
            "chance": rows[0]["chance_prob"],
            "two_step_perfect": sum(r["valid_two_step_acc"] == 1.0 for r in rows),
            "weakest_layers": weakest["n_layers"], "weakest_fraction": weakest["held_out_fraction"],
            "weakest_train_prob": weakest["train_prob"], "weakest_acc": weakest["valid_two_step_acc"],
            "weakest_two_step_prob": weakest["valid_two_step_prob"],
            "most_valid": max(n_valid(r) for r in rows),
            "fewest_trained_ac": min(round(1 / r["chance_prob"]) - n_valid(r) for r in rows),
            "most_trained_ac": max(round(1 / r["chance_prob"]) - n_valid(r) for r in rows)}


SWEEP_KEYS = ("held_out_fraction", "n_layers", "train_prob", "valid_acc", "valid_two_step_acc",
              "valid_prob", "valid_two_step_prob")


def format_sweep(rows: list[dict[str, float]]) -> str:
    short = {"held_out_fraction": "held out", "n_layers": "layers", "train_prob": "train p",
             "valid_acc": "direct acc", "valid_two_step_acc": "CoT acc", "valid_prob": "direct p",
             "valid_two_step_prob": "CoT p"}
    lines = ["".join(f"{short[k]:>12}" for k in SWEEP_KEYS)]
    lines += ["".join(f"{r[k]:>12.4g}" for k in SWEEP_KEYS) for r in rows]
    return "\n".join(lines)


def sweep_figure(rows: list[dict[str, float]]):
    """Greedy accuracy and probability of the correct C on held-out chains against the held-out
    fraction, one colour per depth: solid = chain of thought, dashed = direct."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for depth in sorted({r["n_layers"] for r in rows}):
        g = [r for r in rows if r["n_layers"] == depth]
        col = lambda key: [r[key] for r in g]
        frac = col("held_out_fraction")
        line, = axes[0].plot(frac, col("valid_two_step_acc"), "o-",
                             label=f"two-step, {depth:.0f} layer(s)")
        axes[0].plot(frac, col("valid_acc"), "s--", color=line.get_color(),
                     label=f"direct, {depth:.0f} layer(s)")
        axes[1].plot(frac, col("valid_two_step_prob"), "o-", color=line.get_color())
        axes[1].plot(frac, col("valid_prob"), "s--", color=line.get_color())
    axes[0].set_title("greedy accuracy on held-out chains")
    axes[1].set_title("probability of the correct C on held-out chains")
    axes[1].axhline(rows[0]["chance_prob"], color="grey", ls=":", lw=1, label="chance")
    for ax in axes:
        ax.set_xlabel("held-out fraction of triples")
    axes[0].set_ylabel("fraction / probability, held-out triples")
    axes[0].legend(fontsize=9, ncol=2, loc="center left")
    axes[1].legend(fontsize=9, loc="center left")
    fig.suptitle("Precomputed sweep (book/data/chain-sweep.csv): solid = chain of thought, "
                 "dashed = direct")
    return fig


# ------------------------------------------------------------------------------ related tokens


def describe_related(data: chain.RelatedChainData) -> str:
    example = [data.sentences(k, data.index[:1]).tokens[0].tolist() for k in ("ab", "bc", "ac")]
    return "\n".join([
        f"class tokens x={data.x}, y={data.y}, z={data.z}; {data.n_triples} index tokens in use,",
        f"{len(data.unused)} pool tokens that occur in no sentence",
        f"{len(data.train)} training sentences, {len(data.valid)} held-out sentences 'x i ↝ z i'",
        "one triple (0 = →, 1 = ↝):", *(f"  {e}" for e in example),
        f"chance: 1/{data.n_triples} = {data.chance_prob:.4f} (uniform over the entities 'z i')"])


def first_token_vs_entity_figure(histories, chance: float):
    """Held-out and training probability over training: of the first answer token (z), as the
    original plots it, and of the whole entity (z i)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    x = histories[0]["epoch"]
    for ax, suffix, title in ((axes[0], "_prob_first", "first token only (z), as the original plots it"),
                              (axes[1], "_prob", "whole entity (z i)")):
        plots.band(ax, x, [h["train" + suffix] for h in histories], "training sentences")
        plots.band(ax, x, [h["valid" + suffix] for h in histories], "held-out x i ↝ z i")
        ax.axhline(chance, color="grey", ls="--", lw=1.2, label="chance (1/number of z i)")
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("probability of the answer")
    fig.suptitle("Held-out chains of related entities are answered")
    return fig


def unused_index_figure(histories, chance: float):
    """Whole-answer probability of the held-out triples and of never-seen index tokens."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    x = histories[0]["epoch"]
    plots.band(ax, x, [h["valid_prob"] for h in histories],
               "held-out triples (index seen in other sentences)")
    if "unused_prob" in histories[0]:
        plots.band(ax, x, [h["unused_prob"] for h in histories], "index tokens never seen in training")
    ax.axhline(chance, color="grey", ls="--", lw=1.2, label="chance")
    ax.set(xlabel="epoch", ylabel="probability of the whole answer z i",
           title="Copying works for index tokens the model has produced before")
    ax.legend(fontsize=8)
    return fig
