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
