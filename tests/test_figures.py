"""Figures readable at the book's width: the smallest text of a figure, in CSS pixels as the book shows it,
derived from the figure's size, dpi and font sizes and the column's width (plots.shown_text_px); the
players' layout and typeset panel titles."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from reasoning_lab import plots  # noqa: E402


def test_shown_text_px_follows_size_dpi_fonts_and_column():
    fig, ax = plt.subplots(figsize=(15, 4), dpi=64)
    ax.plot([0, 1], label="curve")
    ax.legend(fontsize=7)
    got = plots.shown_text_px(fig, tight=False)
    # 15 in at 64 dpi is 960 px, shown in a 792-px column: 7 pt -> 7 * 64/72 * 792/960 px
    assert got["width_px"] == 960 and got["text"] == "curve"
    assert got["px"] == pytest.approx(7 * 64 / 72 * plots.BOOK_COLUMN_PX / 960)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)        # narrower than the column: shown at its size
    ax.set_title("title", fontsize=8)
    got = plots.shown_text_px(fig)
    assert got["scale"] == 1.0 and got["px"] == pytest.approx(8 * 100 / 72)
    plt.close(fig)


@pytest.mark.parametrize("width", [4.0, 7.9, 11.4, 16.0])
def test_readable_points_are_readable(width):
    dpi = min(100, plots.BOOK_COLUMN_PX / width)
    size = plots.readable_points(width, dpi)
    fig, ax = plt.subplots(figsize=(width, 3), dpi=dpi)
    ax.set_title("x", fontsize=size)
    ax.tick_params(labelsize=size)
    assert plots.shown_text_px(fig, tight=False)["px"] >= plots.MIN_TEXT_PX
    plt.close(fig)


@pytest.mark.parametrize("n_maps", [2, 3])
def test_training_player_is_readable_and_opens_on_its_last_frame(n_maps, monkeypatch, tmp_path):
    monkeypatch.setenv("REASONING_LAB_METRICS_DIR", str(tmp_path))
    keys = "abc"[:n_maps]
    frames = [(e, {k: np.full((4, 4), float(e)) for k in keys}) for e in (1, 2, 3)]
    html = plots.training_player(frames, {k: f"$B_j$ after $A_i$ ({k})" for k in keys},
                                 {"training": ([1, 2, 3], [3.0, 2.0, 1.0])}, total=3).data
    assert ".last_frame();" in html
    (record,) = __import__("json").loads(next(tmp_path.glob("figures/*.json")).read_text()).values()
    assert record["px"] >= plots.MIN_TEXT_PX and record["width_px"] == pytest.approx(plots.BOOK_COLUMN_PX, abs=1)


def test_chain_panel_titles_are_typeset():
    from reasoning_lab.studies.chain.figures import MAP_TITLES

    for title in MAP_TITLES.values():
        outside_math = re.sub(r"\$[^$]*\$", "", title)
        assert "_" not in outside_math, f"raw subscript in {title!r}"
