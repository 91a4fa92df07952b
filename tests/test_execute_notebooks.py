"""tools/execute_notebooks.py (what `make book` executes the notebooks with), on two tiny notebooks in a
temporary book: the good one is cached with its widget state, the failing one is named with its cell and
line and its traceback kept, and a second run executes nothing."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import execute_notebooks as ex  # noqa: E402

HEAD = "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# {title}\n\n"
GOOD = HEAD.format(title="Good") + """```{code-cell} ipython3
import ipywidgets as w
w.IntSlider(value=3, min=0, max=5)
```

```{code-cell} ipython3
print(6 * 7)
```
"""
BAD = HEAD.format(title="Bad") + """```{code-cell} ipython3
x = 1
```

Some prose.

```{code-cell} ipython3
raise ValueError("broken on purpose")
```
"""


@pytest.fixture()
def book(tmp_path):
    (tmp_path / "_config.yml").write_text("execute:\n  cache: _build/.jupyter_cache\n  timeout: 120\n")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    (nbs / "good.md").write_text(GOOD)
    (nbs / "bad.md").write_text(BAD)
    return tmp_path


def _cache(book):
    from jupyter_cache import get_cache

    return get_cache(str(book / "_build" / ".jupyter_cache"))


def test_failure_is_named_and_kept_and_the_rest_is_cached(book, capsys):
    nbs = [book / "notebooks" / "good.md", book / "notebooks" / "bad.md"]
    assert ex.main(["--config", str(book / "_config.yml"), "--jobs", "2", *map(str, nbs)]) == 1
    out = capsys.readouterr().out
    line = BAD.splitlines().index("```{code-cell} ipython3", BAD.splitlines().index("x = 1")) + 1
    assert f"bad.md, code cell 2 (line {line}): CellExecutionError: ValueError: broken on purpose" in out
    log = (book / "_build" / "logs" / "bad.log").read_text()
    assert "broken on purpose" in log and "Traceback" in log
    assert (book / "_build" / "logs" / "bad.ipynb").is_file()

    cache = _cache(book)
    assert ex.is_cached(cache, nbs[0]) and not ex.is_cached(cache, nbs[1])
    _, nb = cache.merge_match_into_notebook(ex.read_notebook(nbs[0]))
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    sliders = [m for m in state.values() if m["model_name"] == "IntSliderModel"]
    assert len(sliders) == 1 and sliders[0]["state"]["value"] == 3
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["output_type"] == "execute_result"          # the slider's view
    assert code[1].outputs[0]["text"] == "42\n" and code[1].execution_count == 2
    assert set(json.loads((book / "_build" / "notebook-seconds.json").read_text())) == {"good"}

    # the good notebook is cached now: a second run executes only the failing one again
    (book / "notebooks" / "bad.md").write_text(BAD.replace('raise ValueError("broken on purpose")', "x + 1"))
    assert ex.main(["--config", str(book / "_config.yml"), *map(str, nbs)]) == 0
    assert "1 of 2 notebook(s) to run" in capsys.readouterr().out


def test_longest_first_uses_the_last_measurement_then_the_estimates(tmp_path):
    measured = tmp_path / "seconds.json"
    measured.write_text(json.dumps({"b": 5.0, "c": 50.0}))
    paths = [Path(f"{n}.md") for n in ("a", "b", "c")]
    committed = json.loads(ex.ESTIMATES.read_text())
    # "a" is in neither file: assumed long, so it starts first
    assert [p.stem for p in ex.longest_first(paths, measured)] == ["a", "c", "b"]
    assert committed and all(v > 0 for v in committed.values())


def test_bad_arguments_fail_before_any_work(book, capsys):
    with pytest.raises(SystemExit):
        ex.main(["--jobs", "0", str(book / "notebooks" / "good.md")])
    assert "--jobs must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ex.main([str(book / "notebooks" / "missing.md")])
    assert "must be existing MyST .md files" in capsys.readouterr().err
    assert not (book / "_build").exists()
