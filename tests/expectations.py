"""What the book claims about each default run, checked on the metrics the notebook tests produced.

Run by `make test` after nbval: ``pytest tests/expectations.py --metrics-dir _build/metrics``.
The executed notebooks that nbval stored in the book's execution cache (``--nbcache-dir``) are checked
too: what a chapter prints must fit the book's column, as its code must (tests/test_notebook_style.py).
The claims are data on each experiment (``claims=`` in ``studies/<study>/experiment.py``); this file
only loops over the registry: every experiment must have written all of its declared metrics, and every
claim must hold on them.
"""
import json
from pathlib import Path

import pytest

from reasoning_lab import experiments

COLUMN = 88                      # characters the book's column shows without a scroll bar
NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].joinpath("notebooks").glob("*.md"))
# outputs the book renders from a rich representation (the plain text is then not shown)
RICH = {"text/html", "image/png", "image/svg+xml", "application/vnd.jupyter.widget-view+json"}


@pytest.fixture(scope="module")
def metrics_dir(request):
    path = request.config.getoption("--metrics-dir")
    if not path:
        pytest.skip("needs --metrics-dir (run through `make test`)")
    return Path(path)


@pytest.mark.parametrize("exp", experiments.available(), ids=lambda e: e.name)
def test_default_run(exp, metrics_dir):
    file = metrics_dir / f"{exp.name}.json"
    assert file.exists(), f"{exp.name}: the notebook did not record metrics"
    m = json.loads(file.read_text())
    missing = [k for k in exp.metrics if k not in m]
    assert not missing, f"{exp.name}: metrics missing {missing}"
    failures = [f for f in (claim.failure(m) for claim in exp.claims) if f]
    assert not failures, f"{exp.name}: " + "; ".join(failures)


@pytest.fixture(scope="module")
def executed(request):
    """name -> executed notebook, from the execution cache the notebook tests filled."""
    path = request.config.getoption("--nbcache-dir")
    if not path:
        pytest.skip("needs --nbcache-dir (run through `make test`)")
    from jupyter_cache import get_cache

    cache = get_cache(path)
    return {Path(r.uri).stem: cache.get_cache_bundle(r.pk).nb for r in cache.list_cache_records()}


def printed_lines(nb):
    """(cell number, line) for every line of text output the book shows as plain text."""
    for number, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), start=1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out.get("text", "")
            elif "data" in out and not RICH & set(out["data"]):
                text = out["data"].get("text/plain", "")
            else:
                continue
            yield from ((number, line) for line in text.splitlines())


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_printed_output_fits_column(source, executed):
    assert source.stem in executed, f"{source.stem}: not in the execution cache"
    long = [(n, line) for n, line in printed_lines(executed[source.stem]) if len(line) > COLUMN]
    assert not long, (f"{source.stem}: {len(long)} printed line(s) longer than {COLUMN} characters, "
                      f"e.g. code cell {long[0][0]}: {long[0][1]!r}")


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_stray_values_under_cells(source, executed):
    """A cell's last expression shows its value: a dict or list a helper returned (the values glued for
    the prose, say) is printed under the cell as a stray line the text never explains."""
    stray = []
    for number, cell in enumerate((c for c in executed[source.stem].cells if c.cell_type == "code"), 1):
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "") if out.get("output_type") == "execute_result" else ""
            if isinstance(text, list):
                text = "".join(text)
            if text.startswith(("{", "[", "(")) and not RICH & set(out.get("data", {})):
                stray.append((number, text[:60]))
    assert not stray, f"{source.stem}: values shown under code cells: {stray}"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_readable_at_book_width(source, metrics_dir):
    """Every figure the chapter saved (``run.savefig``) or played (``plots.scrubber``) shows its smallest
    text at MIN_TEXT_PX or more at the book's column width (``plots.shown_text_px``: derived from the
    figure's size, dpi and font sizes and ``plots.BOOK_COLUMN_PX``, which the browser check measures)."""
    from reasoning_lab.plots import BOOK_COLUMN_PX, MIN_TEXT_PX

    file = metrics_dir / "figures" / f"{source.stem}.json"
    assert file.exists(), f"{source.stem}: no figure was measured"
    small = {name: f"{m['px']:.1f} px ({m['points']} pt {m['text']!r}, image {m['width_px']} px)"
             for name, m in json.loads(file.read_text()).items() if m["px"] < MIN_TEXT_PX}
    assert not small, (f"{source.stem}: text smaller than {MIN_TEXT_PX} px at the {BOOK_COLUMN_PX}-px "
                       f"column: {small}")
