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
    """A static control for the HTML book: ``update(i)`` redraws ``fig`` for frame ``i``; returns an HTML
    player with a slider (matplotlib's JavaScript animation), which works without a kernel."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    anim = FuncAnimation(fig, update, frames=frames, interval=interval, blit=False)
    html = anim.to_jshtml(default_mode="once")
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
