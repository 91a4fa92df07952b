"""The interactive path: `jupyter lab` with a live kernel, driven in headless Chromium (tools/lab_check.py).

A MyST chapter opens as a notebook through jupytext, runs, and a widget slider dragged with the mouse makes
the kernel redraw the figure; the server is stopped and nothing it started is left running. Skipped when no
Chromium is installed (CI installs one)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import browser_check  # noqa: E402
import lab_check  # noqa: E402


@pytest.mark.skipif(browser_check.find_browser() is None, reason="no Chromium installed")
def test_jupyterlab_live_kernel_slider_redraws(capsys):
    shot = ROOT / "_build" / "lab" / "one-layer-dynamics.png"
    shot.unlink(missing_ok=True)
    rc = lab_check.main(["--notebook", "notebooks/one-layer-dynamics.md", "--screenshot", str(shot)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "'Jupytext Notebook' factory" in out and "the kernel redrew the figure" in out
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
