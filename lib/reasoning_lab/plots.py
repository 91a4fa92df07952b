"""Shared figure helpers: learning curves with a seed band and a chance line, heat-maps."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def use_book_style() -> None:
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.0), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "axes.titlesize": 11, "axes.labelsize": 10, "savefig.bbox": "tight",
    })


def band(ax, x: Sequence[float], runs: Sequence[Sequence[float]], label: str, color=None, style="-",
         log: bool = False):
    """Mean over runs (seeds) as a line, min-max as a shaded band."""
    arr = np.asarray(runs, dtype=float)
    if arr.ndim == 1:
        arr = arr[None]
    mean = np.exp(np.log(arr).mean(0)) if log else arr.mean(0)
    (line,) = ax.plot(x, mean, style, color=color, label=label + (f" (mean of {len(arr)})" if len(arr) > 1 else ""))
    if len(arr) > 1:
        ax.fill_between(x, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def nll_curves(ax, histories, series: dict[str, str], chance: float | None = None,
               chance_label: str = "chance (uniform guess)", title: str = "", key_suffix: str = "_nll"):
    """Plot ``{split: label}`` NLL curves from a list of ``History`` (one per seed), with a chance line."""
    x = histories[0]["epoch"]
    for split, label in series.items():
        band(ax, x, [h[split + key_suffix] for h in histories], label)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1.2, label=chance_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood of the answer (nats)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def heatmap(ax, matrix, title: str, xlabel: str, ylabel: str, vmin=None, vmax=None, cmap="magma",
            colorbar_label: str | None = None):
    im = ax.imshow(np.asarray(matrix), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if colorbar_label:
        cb.set_label(colorbar_label)
    return im


def scrubber(fig, update, frames, interval: int = 150):
    """A static control for the HTML book: ``update(i)`` redraws ``fig`` for frame ``i`` (``frames``: a
    number of frames or the frame arguments); returns an HTML player with a slider (matplotlib's
    JavaScript animation), which works without a kernel."""
    import tempfile
    from pathlib import Path

    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib.animation import HTMLWriter

    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    # matplotlib's JavaScript player, fed one rendering per frame (an animation object would draw the
    # figure three times per frame: its own redraw plus savefig's). A layout done once by tight_layout
    # leaves a placeholder engine that makes every savefig draw twice; the layout is fixed, so drop it.
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        fig.set_layout_engine(None)
    writer = HTMLWriter(fps=1000 / interval, embed_frames=True, default_mode="once")
    with tempfile.TemporaryDirectory() as tmp, mpl.rc_context({"savefig.bbox": None}):
        path = Path(tmp) / "player.html"
        with writer.saving(fig, str(path), dpi=fig.dpi):
            for i in (range(frames) if isinstance(frames, int) else frames):
                update(i)
                writer.grab_frame()
        html = path.read_text()
    plt.close(fig)
    return HTML(_self_contained_player(html))


# Button icons of matplotlib's player as plain text: its template takes them from a Font Awesome 4 style
# sheet on a CDN, which an offline reader (or the self-contained HTML book) cannot load.
_PLAYER_ICONS = {"minus": "\u2212", "fast-backward": "\u21e4", "step-backward": "\u2039",
                 "play fa-flip-horizontal": "\u25c0", "pause": "\u2016", "play": "\u25b6",
                 "step-forward": "\u203a", "fast-forward": "\u21e5", "plus": "+"}


def _self_contained_player(html: str) -> str:
    import re

    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html)
    return re.sub(r'<i class="fa fa-([a-z -]+)"></i>',
                  lambda m: _PLAYER_ICONS.get(m.group(1), m.group(0)), html)


def training_player(frames, panels: dict[str, str], curves: dict[str, tuple], *, xlabel: str = "epoch",
                    total: int | None = None, panel_labels: tuple[str, str] = ("candidate j", "query i"),
                    curve_ylabel: str = "NLL of the answer (nats)", curve_title: str = "", chance=None,
                    colour: str = "logit", log_colour: bool = False, extent=None, logy: bool = False,
                    clip_quantile: float | None = None, identity_line: bool = False, figsize=None,
                    dpi: int = 64, interval: int = 150):
    """A static player of training dynamics: one image panel per entry of ``panels`` and the loss curves,
    with a marker at the frame's moment; a slider scrubs through ``frames``. Works without a kernel.

    ``frames`` is a list of ``(x, {panel key: 2-D array})`` recorded during training; ``panels`` maps the
    keys to titles; ``curves`` maps labels to ``(xs, ys)``. The colour scale is fixed over the whole run
    (from the ``clip_quantile`` to the maximum when given, else minimum to maximum), or logarithmic from
    1e-3 to 1 with ``log_colour`` (column shares of a histogram, drawn with ``extent``; ``identity_line``
    adds the dotted line output = label).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    keys = list(panels)
    as_np = lambda m: np.asarray(m, dtype=float)
    if log_colour:
        norm, lo, hi = LogNorm(vmin=1e-3, vmax=1), None, None
    else:
        norm = None
        lo = min(float(np.quantile(as_np(mats[k]), clip_quantile)) if clip_quantile else
                 float(as_np(mats[k]).min()) for _, mats in frames for k in keys)
        hi = max(float(as_np(mats[k]).max()) for _, mats in frames for k in keys)
    n = len(keys) + 1
    fig, axes = plt.subplots(1, n, figsize=figsize or (3.6 * n + 0.6, 3.9), dpi=dpi,
                             gridspec_kw={"width_ratios": [1] * len(keys) + [1.3]})
    show_image = (lambda m: np.where(as_np(m) > 0, as_np(m), np.nan)) if log_colour else as_np
    images = []
    for ax, k in zip(axes, keys):
        first = show_image(frames[0][1][k])
        if extent is None:
            images.append(heatmap(ax, first, panels[k], *panel_labels, vmin=lo, vmax=hi, cmap="viridis",
                                  colorbar_label=colour))
            continue
        im = ax.imshow(first, origin="lower", aspect="auto", cmap="viridis", norm=norm, extent=extent,
                       interpolation="nearest")
        ax.set(title=panels[k], xlabel=panel_labels[0], ylabel=panel_labels[1])
        ax.grid(False)
        if identity_line:
            ends = [extent[0] + 0.5, extent[1] - 0.5]
            ax.plot(ends, ends, color="white", lw=0.6, ls=":")
        fig.colorbar(im, ax=ax, label=colour)
        images.append(im)
    curve_ax = axes[-1]
    for label, (xs, ys) in curves.items():
        curve_ax.plot(xs, ys, label=label)
    if chance is not None:
        curve_ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
    if logy:
        curve_ax.set_yscale("log")
    curve_ax.set(xlabel=xlabel, ylabel=curve_ylabel, title=curve_title)
    curve_ax.legend(fontsize=7)
    marker = curve_ax.axvline(frames[0][0], color="black", lw=1)
    of = f" of {total}" if total else ""
    fig.suptitle(f"{xlabel} {frames[0][0]}{of}")
    fig.tight_layout(rect=(0, 0, 1, 0.92))

    def show(i):
        x, mats = frames[i]
        for im, k in zip(images, keys):
            im.set_data(show_image(mats[k]))
        marker.set_xdata([x, x])
        fig.suptitle(f"{xlabel} {x}{of}")

    return scrubber(fig, show, len(frames), interval=interval)


def attention_figure(model, queries, labels: Sequence[str], title: str):
    """Where the last position of ``queries`` looks: its attention over the positions, averaged over the
    rows of ``queries``, one heat-map (head x position) per layer. Returns the figure and the
    ``[layers, heads, positions]`` tensor it draws."""
    import matplotlib.pyplot as plt

    from .model import attention_weights

    att = attention_weights(model, queries)[:, :, :, -1, :].mean(1)
    n_layers, n_heads, n_pos = att.shape
    if len(labels) != n_pos:
        raise ValueError(f"labels has {len(labels)} entries: expected one per position ({n_pos})")
    fig, axes = plt.subplots(1, n_layers, figsize=(4.2 * n_layers, 3.0), squeeze=False,
                             constrained_layout=True)
    for layer, ax in enumerate(axes[0]):
        heatmap(ax, att[layer], f"layer {layer + 1}", "attended position (token)", "head",
                      vmin=0, vmax=1, cmap="viridis", colorbar_label="attention weight")
        ax.set_xticks(range(n_pos), [f"{i}: {t}" for i, t in enumerate(labels)])
        ax.set_yticks(range(n_heads), [str(h + 1) for h in range(n_heads)])
    fig.suptitle(title)
    return fig, att


def glue_values(**values) -> dict:
    """Glue every value (a number for ``{glue:text}`` in the prose) without displaying it; returns
    them. Outside a notebook kernel this only returns the values."""
    try:
        from myst_nb import glue
    except ImportError:           # the library without the book's extras
        return values
    for name, value in values.items():
        glue(name, value, display=False)
    return values
