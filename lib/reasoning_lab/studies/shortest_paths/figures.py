"""Figures and tables of the learned shortest-path chapter (measured values solid, references dashed)."""
from __future__ import annotations

import numpy as np
import torch

from .data import UNREACHABLE
from .model import histogram2d, smooth, split_key

ON_PATH = ("test-onpath-small-target", "test-onpath")
GROUP_COLOURS = {"1": "tab:blue", "2": "tab:orange", "3": "tab:green", "4+": "tab:red",
                 "unreachable": "tab:purple"}


def mse_by_target(res: dict, targets: torch.Tensor, target: int = 2) -> dict[str, float]:
    """MSE of one evaluated split on the examples whose target is ``target`` and on the others,
    and the share of ``target`` (NaN where a part is empty)."""
    sq = (res["outputs"] - res["labels"].float()) ** 2
    mask = targets == target
    part = lambda m: float(sq[m].mean()) if bool(m.any()) else float("nan")
    return {"same": part(mask), "other": part(~mask), "share": float(mask.float().mean())}


def target_metrics(results: dict, data: dict, suffix: str = "") -> dict[str, float]:
    """Metrics of the on-path test sets split by target 2 / other targets."""
    out = {}
    for s in ON_PATH:
        m = mse_by_target(results[s], data[s][1])
        key = split_key(s)
        out[f"test_loss_{key}_target2{suffix}"] = m["same"]
        out[f"test_loss_{key}_other_targets{suffix}"] = m["other"]
        if not suffix:
            out[f"target2_share_{key}"] = m["share"]
    return out


# label ranges of the table's share columns; the last is "unreachable"
SHARE_BINS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, UNREACHABLE - 1), (UNREACHABLE, UNREACHABLE))


def label_table(data: dict) -> str:
    """Per split: mean and variance of the labels, share of target 2, and the label shares in % (ours,
    with the original generator's at n <= 15 on the row below where they are known)."""
    from . import reference as ref
    from .data import label_shares

    names = [str(lo) if lo == hi else f"{lo}+" for lo, hi in SHARE_BINS[:-1]] + ["unr."]
    lines = [f"{'split':24s} {'mean':>5s} {'var':>6s} {'t=2':>4s}  shares %: "
             + " ".join(f"{n:>4s}" for n in names)]

    def shares(of):        # label -> share, binned as the columns
        return [sum(v for k, v in of.items() if lo <= k <= hi) for lo, hi in SHARE_BINS]

    for s, (_, t, y) in data.items():
        ours = shares(label_shares(y))
        lines.append(f"{s:24s} {y.float().mean():5.2f} {y.float().var():6.2f} "
                     f"{(t == 2).float().mean():4.0%}  {'':9s} "
                     + " ".join(f"{100 * v:4.0f}" for v in ours))
        orig = dict(ref.ORIGINAL_LABEL_SHARES.get(s, {}))
        known = [True] * len(SHARE_BINS) if orig else [False] * (len(SHARE_BINS) - 1) + [True]
        if s in ref.ORIGINAL_UNREACHABLE_SHARE:
            orig[UNREACHABLE] = ref.ORIGINAL_UNREACHABLE_SHARE[s]
        if orig:
            cells = [f"{100 * v:4.0f}" if k else f"{'':4s}" for v, k in zip(shares(orig), known)]
            lines.append(f"{'  original (n <= 15)':24s} {'':17s}  {'':9s} " + " ".join(cells))
    return "\n".join(lines)


def label_share_figure(data: dict, max_vertices: int):
    """Label shares of the pre-training and fine-tuning sets, ours (bars) and the original's (dots)."""
    import matplotlib.pyplot as plt

    from . import reference as ref
    from .data import label_shares

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for ax, s in zip(axes, ("pretrain", "finetune")):
        ours, orig = label_shares(data[s][2]), ref.ORIGINAL_LABEL_SHARES[s]
        ks = sorted(set(ours) | set(orig))
        x = np.arange(len(ks))
        ax.bar(x, [ours.get(k, 0) for k in ks], color="tab:blue", label=f"ours (n <= {max_vertices})")
        ax.plot(x, [orig.get(k, np.nan) for k in ks], "o", color="tab:orange",
                label="original (n <= 15)")
        ax.set_xticks(x, [str(k) for k in ks])
        ax.set(xlabel="label: distance (15 = unreachable)", ylabel="share of examples",
               title=f"{s} labels")
        ax.legend(fontsize=9)
    return fig


def loss_by_label_figure(log, label_variance: float, steps: int):
    """Training MSE overall and per label group (running means, log scale), the label variance
    dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    w = max(5, steps // 60)
    ax.plot(log.step, smooth(log.loss, w), color="black", lw=2, label="all labels")
    for name, colour in GROUP_COLOURS.items():
        ax.plot(log.step, smooth(log.by_label[name], w), color=colour, label=f"label {name}")
    ax.axhline(label_variance, color="grey", ls="--", lw=1, label="label variance (predict the mean)")
    ax.set_yscale("log")
    ax.set(xlabel="training step", ylabel=f"training MSE (running mean over {w} steps)",
           title="Pre-training: each distance is learned in its own phase")
    ax.legend(fontsize=8, ncol=2)
    return fig


def hist2d(ax, res: dict, title: str):
    """Column-normalised 2-D histogram of true label against model output (log colour)."""
    from matplotlib.colors import LogNorm

    H, edges = histogram2d(res["labels"], res["outputs"], max_label=UNREACHABLE)
    im = ax.imshow(np.where(H > 0, H, np.nan), origin="lower", aspect="auto", cmap="viridis",
                   norm=LogNorm(vmin=1e-3, vmax=1), interpolation="nearest",
                   extent=(-0.5, UNREACHABLE + 0.5, edges[0], edges[-1]))
    ax.plot([0, UNREACHABLE], [0, UNREACHABLE], color="white", lw=0.6, ls=":")
    ax.set(xlabel="true label", ylabel="model output")
    ax.set_title(title, fontsize=10)
    ax.grid(False)
    return im


def hist_figure(res: dict, title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    im = hist2d(ax, res, title)
    fig.colorbar(im, ax=ax, label="share of the column (log)")
    return fig


def test_hist_figure(results: dict, splits):
    """Histograms of the fine-tuning set and every test set after fine-tuning."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.0), layout="constrained")
    panels = [("finetune", "fine-tuning set")] + [(s, s.removeprefix("test-")) for s in splits]
    for ax, (s, name) in zip(axes.flat, panels):
        im = hist2d(ax, results[s], f"{name}: MSE {results[s]['mse']:.3g}")
    fig.colorbar(im, ax=axes, label="share of the column (log)", shrink=0.8)
    fig.suptitle("After fine-tuning (as run): true label vs output, columns normalised")
    return fig


def finetune_figure(logs: dict, steps: int):
    """Fine-tuning loss curves, one per procedure (``{label: History}``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    w = max(3, steps // 20)
    for label, log in logs.items():
        ax.plot(smooth(log.loss, w), label=label)
    ax.set_yscale("log")
    ax.set(xlabel="fine-tuning step", ylabel=f"training MSE (running mean over {w} steps)",
           title="Fine-tuning to on-path targets")
    ax.legend(fontsize=8)
    return fig


class FrameRecorder:
    """``on_step`` hook of ``train_steps``: the model's outputs on fixed graphs every ``every``
    steps and at step ``last`` (frames for the training player)."""

    def __init__(self, watch: tuple, every: int, last: int, device="cpu"):
        self.watch, self.every, self.last, self.device = watch, every, last, device
        self.frames: list[tuple[int, torch.Tensor]] = []

    def state_dict(self) -> dict:            # kept in the training checkpoint (reasoning_lab.train.fit)
        return {"steps": [s for s, _ in self.frames], "outputs": [o for _, o in self.frames]}

    def load_state_dict(self, state: dict) -> None:
        self.frames = list(zip(state["steps"], state["outputs"]))

    def __call__(self, step: int, model) -> None:
        from .model import predict

        if step % self.every == 0 or step == self.last:
            self.frames.append((step + 1, predict(model, self.watch[0], self.watch[1],
                                                  device=self.device)))

    def player(self, log, total: int):
        """The shared training player over the recorded frames and the per-label loss curves."""
        from ...plots import training_player

        U = UNREACHABLE
        hists = [(step, {"out": histogram2d(self.watch[2], out.clamp(-0.5, U + 0.5), max_label=U,
                                            lo=-0.5, hi=U + 0.5)[0]}) for step, out in self.frames]
        w = max(5, total // 60)
        curves = {"all labels": (log.step, smooth(log.loss, w))}
        curves.update({f"label {k}": (log.step, smooth(log.by_label[k], w))
                       for k in ("1", "2", "3", "4+")})
        return training_player(
            hists, {"out": f"outputs on {len(self.watch[2]):,} fixed graphs"}, curves,
            xlabel="step", total=total,
            panel_labels=("true label", "model output (clipped to the label range)"),
            curve_ylabel="training MSE (running mean)", curve_title="pre-training loss", logy=True,
            colour="share of the column (log)", log_colour=True,
            extent=(-0.5, U + 0.5, -0.5, U + 0.5), identity_line=True, figsize=(11, 4.0))


def test_table(as_run: dict, described: dict, data: dict, splits, post: dict | None = None) -> str:
    """MSE per test set: ours as run and as described, the label variance, and (when given) the
    post's numbers — print those only beside a run at the post's graph size."""
    head = f"{'test set':26s} {'as run':>8s} {'described':>10s} {'label var':>10s}"
    lines = [head + (f" {'post':>8s}" if post else "")]
    for s in splits:
        line = (f"{s:26s} {as_run[s]['mse']:8.3f} {described[s]['mse']:10.3f} "
                f"{data[s][2].float().var():10.2f}")
        lines.append(line + (f" {post[s]:8.4g}" if post else ""))
    return "\n".join(lines)


def test_metrics(as_run: dict, described: dict, data: dict, splits) -> dict[str, float]:
    """Recorded test metrics: MSE as run and as described, label variance, per test set."""
    out = {}
    for s in splits:
        k = split_key(s)
        out[f"test_loss_{k}"] = as_run[s]["mse"]
        out[f"test_loss_{k}_as_described"] = described[s]["mse"]
        out[f"label_variance_{k}"] = float(data[s][2].float().var())
    return out


def target_lines(m: dict, suffix: str = "") -> str:
    """The on-path test losses split into target 2 and the other targets, as text."""
    lines = []
    for s in ON_PATH:
        k = split_key(s)
        lines.append(f"{s:26s} target 2 ({m[f'target2_share_{k}']:.0%} of the set): "
                     f"{m[f'test_loss_{k}_target2{suffix}']:.3f}; other targets: "
                     f"{m[f'test_loss_{k}_other_targets{suffix}']:.3f}")
    return "\n".join(lines)


def saved_run(folder) -> dict:
    """A saved run of the chapter (``params.json``, ``metrics.json``): the command that made it, a
    table of its test losses beside the post's and the committed runs' (all at n <= 15), and the
    numbers the prose quotes, by glue name; ``text`` is all of it as printed (only a line saying so, and
    no glue, when the folder holds no finished run)."""
    import json
    from pathlib import Path

    from . import reference as ref
    from .data import TEST_SPLITS

    folder = Path(folder)
    if not (folder / "metrics.json").exists():       # e.g. while the run that makes it is running
        return {"text": f"no saved run in {folder.name}/ yet", "glue": {}}
    params = json.loads((folder / "params.json").read_text())
    m = json.loads((folder / "metrics.json").read_text())
    command = (f"reasoning-lab run shortest-paths --preset cpu-full \\\n    --out book/data/{folder.name}"
               f"\nn <= {params['max_vertices']} (fine-tuning n <= {params['max_tune_vertices']}), "
               f"{params['n_layers']} layers, {params['pretrain_steps']:,} steps x "
               f"{params['batch_size']}, {m.get('pretrain_seconds', float('nan')) / 60:.0f} min "
               f"of pre-training")
    head = (f"{'test set':26s} {'as run':>7s} {'descr.':>7s} {'var':>6s} {'post':>7s} "
            f"{'6L run':>7s} {'11L run':>8s}")
    lines = [head]
    for s in TEST_SPLITS:
        k = split_key(s)
        lines.append(f"{s:26s} {m[f'test_loss_{k}']:7.3f} {m[f'test_loss_{k}_as_described']:7.3f} "
                     f"{m[f'label_variance_{k}']:6.2f} {ref.POST_TEST_LOSS[s]:7.4g} "
                     f"{ref.COMMITTED_SIX_LAYER_TEST_LOSS[s]:7.4g} "
                     f"{ref.ELEVEN_LAYER_TEST_LOSS[s]:8.4g}")
    glue = {f"full_{k}": v for k, v in m.items() if isinstance(v, (int, float))}
    glue.update(full_max_vertices=params["max_vertices"], full_layers=params["n_layers"],
                full_steps=params["pretrain_steps"], full_batch=params["batch_size"],
                full_eval_batch=params["eval_batch"],
                full_examples=params["pretrain_steps"] * params["batch_size"])
    table, targets = "\n".join(lines), target_lines(m)
    return {"params": params, "metrics": m, "command": command, "table": table, "targets": targets,
            "text": "\n\n".join((command, table, targets)), "glue": glue}
