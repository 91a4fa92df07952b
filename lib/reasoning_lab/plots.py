"""Shared figure helpers: learning curves with a seed band and a chance line, heat-maps."""
from __future__ import annotations

from typing import Sequence

import numpy as np


# The width in CSS pixels of the book's text column in a 1280-px browser window (tools/browser_check.py
# measures it in the built page and fails when it differs). The book shows an image at its own size, or
# scaled down to this width when it is wider; a reader must be able to read its smallest text.
BOOK_COLUMN_PX = 792
MIN_TEXT_PX = 9.0


def shown_text_px(fig, tight: bool = True, column_px: float = BOOK_COLUMN_PX) -> dict:
    """The smallest text of ``fig`` as the book shows it, in CSS pixels: each visible text's font size
    (points) at the figure's dpi, times the scale at which the image is shown (the column's width over
    the image's, at most 1). ``tight``: the image is cropped as ``bbox_inches="tight"`` crops it (the
    inline backend's figures); otherwise it is the whole figure (a player's frames). Returns ``px``,
    the ``text`` and its ``points``, the image's ``width_px`` and the ``scale``."""
    import matplotlib as mpl
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    if tight:
        width_in = fig.get_tightbbox(renderer).width + 2 * mpl.rcParams["savefig.pad_inches"]
    else:
        width_in = fig.get_figwidth()
    width_px = width_in * fig.dpi
    scale = min(1.0, column_px / width_px)
    smallest = None
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or not fig.bbox.overlaps(t.get_window_extent(renderer)):
            continue
        axes = t.axes
        if axes is not None and not axes.get_visible():
            continue
        if smallest is None or t.get_fontsize() < smallest.get_fontsize():
            smallest = t
    if smallest is None:
        return {"px": float("inf"), "text": "", "points": 0.0, "width_px": width_px, "scale": scale}
    points = smallest.get_fontsize()
    return {"px": points * fig.dpi / 72 * scale, "text": smallest.get_text()[:40], "points": points,
            "width_px": round(width_px), "scale": round(scale, 3)}


_CHAPTER: dict[str, str] = {}


def set_figure_chapter(name: str) -> None:
    """The chapter whose figures :func:`note_figure` records (``lab.start`` sets it)."""
    _CHAPTER["name"] = name


def note_figure(fig, name: str, tight: bool = True) -> dict:
    """Measure ``fig`` (:func:`shown_text_px`); where the notebook tests collect metrics
    (``REASONING_LAB_METRICS_DIR``) the measurement is added to ``figures/<chapter>.json`` there, and
    the tests check that every figure of the book is readable."""
    import json
    import os
    from pathlib import Path

    size = shown_text_px(fig, tight=tight)
    collect = os.environ.get("REASONING_LAB_METRICS_DIR")
    if collect:
        chapter = _CHAPTER.get("name", "unknown")
        path = Path(collect) / "figures" / f"{chapter}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        known = json.loads(path.read_text()) if path.exists() else {}
        known[name] = size
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, path)
    return size


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
    frames = list(range(frames) if isinstance(frames, int) else frames)
    update(frames[-1])
    note_figure(fig, f"player: {fig.texts[0].get_text()[:30] if fig.texts else fig.axes[0].get_title()[:30]}",
                tight=False)
    with tempfile.TemporaryDirectory() as tmp, mpl.rc_context({"savefig.bbox": None}):
        path = Path(tmp) / "player.html"
        with writer.saving(fig, str(path), dpi=fig.dpi):
            for i in frames:
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
    # the player opens on its last frame, where what it shows has happened (the first is the untrained
    # model); the slider, the buttons and "First frame" still go back through the run
    html, n = re.subn(r"(\b(anim\w+) = new Animation\([^;]*\);)", r"\1 \2.last_frame();", html)
    if n != 1:
        raise RuntimeError("matplotlib's player template changed: cannot open it on its last frame")
    return re.sub(r'<i class="fa fa-([a-z -]+)"></i>',
                  lambda m: _PLAYER_ICONS.get(m.group(1), m.group(0)), html)


def training_player(frames, panels: dict[str, str], curves: dict[str, tuple], *, xlabel: str = "epoch",
                    total: int | None = None, panel_labels: tuple[str, str] = ("candidate j", "query i"),
                    curve_ylabel: str = "NLL of the answer (nats)", curve_title: str = "", chance=None,
                    colour: str = "logit", log_colour: bool = False, extent=None, logy: bool = False,
                    clip_quantile: float | None = None, identity_line: bool = False, figsize=None,
                    dpi: float | None = None, interval: int = 150):
    """A static player of training dynamics: one image panel per entry of ``panels`` and the loss curves,
    with a marker at the frame's moment; a slider scrubs through ``frames``. Works without a kernel.

    ``frames`` is a list of ``(x, {panel key: 2-D array})`` recorded during training; ``panels`` maps the
    keys to titles; ``curves`` maps labels to ``(xs, ys)``. The colour scale is fixed over the whole run
    (from the ``clip_quantile`` to the maximum when given, else minimum to maximum), or logarithmic from
    1e-3 to 1 with ``log_colour`` (column shares of a histogram, drawn with ``extent``; ``identity_line``
    adds the dotted line output = label).
    """
    import matplotlib as mpl
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
    # up to three panels side by side, more in two rows; drawn as wide as the book's column, with text
    # large enough to read there (readable_points)
    show_image = (lambda m: np.where(as_np(m) > 0, as_np(m), np.nan)) if log_colour else as_np
    rows = 1 if n <= 3 else 2
    cols = -(-n // rows)
    figsize = figsize or (3.6 * cols + 0.6, 3.9 * rows)
    dpi = min(dpi, BOOK_COLUMN_PX / figsize[0]) if dpi else BOOK_COLUMN_PX / figsize[0]
    size = readable_points(figsize[0], dpi)
    with mpl.rc_context({"font.size": size, "axes.titlesize": size, "axes.labelsize": size,
                         "xtick.labelsize": size, "ytick.labelsize": size, "legend.fontsize": size,
                         "figure.titlesize": size + 1}):
        fig, grid = plt.subplots(rows, cols, figsize=figsize, dpi=dpi, squeeze=False,
                                 gridspec_kw={"width_ratios": [1] * cols if rows > 1 else
                                              [1] * len(keys) + [1.6]})
        axes = list(grid.flat)
        for ax in axes[n:]:
            ax.remove()
        images, marker, title = _draw_training_player(
            fig, axes[:n], frames, keys, panels, curves, xlabel=xlabel, total=total,
            panel_labels=panel_labels, curve_ylabel=curve_ylabel, curve_title=curve_title, chance=chance,
            colour=colour, norm=norm, lo=lo, hi=hi, extent=extent, logy=logy, identity_line=identity_line,
            show_image=show_image)
        for ax in fig.axes:   # ticks made later, as the frames are drawn, keep the size too
            ax.tick_params(labelsize=size)
    of = f" of {total}" if total else ""

    def show(i):
        x, mats = frames[i]
        for im, k in zip(images, keys):
            im.set_data(show_image(mats[k]))
        marker.set_xdata([x, x])
        title.set_text(f"{xlabel} {x}{of}")

    return scrubber(fig, show, len(frames), interval=interval)


def readable_points(width_in: float, dpi: float, column_px: float = BOOK_COLUMN_PX) -> float:
    """The smallest font size (points, rounded up to a half) that the book shows at ``MIN_TEXT_PX`` or
    more, for a figure ``width_in`` inches wide at ``dpi`` (shown at its size, or scaled down to the
    column when wider)."""
    import math

    scale = min(1.0, column_px / (width_in * dpi))
    return max(8.0, math.ceil(2 * MIN_TEXT_PX * 72 / (dpi * scale)) / 2)


def _draw_training_player(fig, axes, frames, keys, panels, curves, *, xlabel, total, panel_labels,
                          curve_ylabel, curve_title, chance, colour, norm, lo, hi, extent, logy,
                          identity_line, show_image):
    images = []
    for ax, k in zip(axes, keys):
        first = show_image(frames[-1][1][k])
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
    curve_ax.legend()
    marker = curve_ax.axvline(frames[-1][0], color="black", lw=1)
    title = fig.suptitle(f"{xlabel} {frames[-1][0]}" + (f" of {total}" if total else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.95 if len(axes) > 3 else 0.92))
    return images, marker, title


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
