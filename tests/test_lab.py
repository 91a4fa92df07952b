"""The interactive path: `make lab` with a live kernel, driven in headless Chromium (tools/lab_check.py).

A MyST chapter opens as a notebook through jupytext and runs; its prose renders (no MyST role left as text,
every {eval} number shown; the text goes to _build/lab/<chapter>.txt); the kernel shows progress bars with
no thread override; a widget slider dragged with the mouse makes the kernel redraw the figure; saving
leaves the .md unchanged; the server is stopped and nothing it started is left running. Skipped when no
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
def test_jupyterlab_renders_the_prose_runs_and_saves_cleanly(capsys):
    shot, text = ROOT / "_build" / "lab" / "bilinear-dynamics.png", ROOT / "_build" / "lab" / "bilinear-dynamics.txt"
    shot.unlink(missing_ok=True)
    text.unlink(missing_ok=True)
    rc = lab_check.main(["--notebook", "notebooks/bilinear-dynamics.md"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for expected in ("'Jupytext Notebook' factory", "prose rendered by jupyterlab-myst", "progress bars",
                     "the kernel redrew the figure", "unchanged"):
        assert expected in out, (expected, out)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    rendered = text.read_text()
    assert "{eval}" not in rendered and "{cite}" not in rendered and "Training dynamics" in rendered


def test_prose_problems_are_caught():
    cells = [{"type": "markdown", "rendered": True, "myst": True,
              "text": "the loss is {glue:text}`loss` and NameError: name 'loss' is not defined"}]
    problems = lab_check.prose_problems(cells, "{eval}`loss`")
    assert any("role left as text" in p for p in problems) and any("failed" in p for p in problems)
    assert lab_check.prose_problems([{**cells[0], "myst": False, "text": "plain 1.5"}], "")
    assert lab_check.kernel_problems({"quiet": "True", "bar": "False",
                                      "env": "{'REASONING_LAB_THREADS': '1'}"}) and \
        not lab_check.kernel_problems({"quiet": "False", "bar": "True", "env": "{}"})
