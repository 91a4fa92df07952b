"""pytest plugin used by `make test`: after nbval has executed the notebooks, store each fully passed
notebook with its outputs in the book's execution cache, so the book build that follows reuses those
outputs instead of executing every notebook a second time. Also prints how long each notebook took.

Load with ``-p nbval_cache`` (``tests`` on PYTHONPATH). The cache location and the MyST source folder
come from the environment: NBCACHE_DIR (default _build/.jupyter_cache) and NBCACHE_SOURCES (default
notebooks).
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

_cells: dict[str, list] = defaultdict(list)
_failed: set[str] = set()
_seconds: dict[str, float] = defaultdict(float)
_started: dict[str, float] = {}


def _nb_name(item) -> str | None:
    if type(item).__name__ != "IPyNbCell":
        return None
    return Path(str(item.parent.fspath)).stem


def pytest_runtest_setup(item):
    name = _nb_name(item)
    if name:
        _started[item.nodeid] = time.perf_counter()


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    name = report.nodeid.split("::")[0]
    if report.failed:
        _failed.add(Path(name).stem)


def pytest_runtest_teardown(item):
    name = _nb_name(item)
    if name:
        _seconds[name] += time.perf_counter() - _started.pop(item.nodeid, time.perf_counter())
        _cells[name].append(item)


def pytest_sessionfinish(session, exitstatus):
    if not _cells:
        return
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook

    cache = get_cache(os.environ.get("NBCACHE_DIR", "_build/.jupyter_cache"))
    sources = Path(os.environ.get("NBCACHE_SOURCES", "notebooks"))
    stored = []
    for name, items in _cells.items():
        source = sources / f"{name}.md"
        if name in _failed or not source.exists():
            continue
        nb = read_myst_markdown_notebook(source.read_text(), path=source)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        ran = [it for it in items if getattr(it, "test_outputs", None) is not None]
        if len(ran) != len(code_cells):
            continue
        for count, (cell, item) in enumerate(zip(code_cells, ran), start=1):
            cell.outputs = [nbformat.from_dict(dict(o)) for o in item.test_outputs]
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
            cell.execution_count = count
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(source.resolve()),
                                                  data={"execution_seconds": _seconds[name]}),
                                    check_validity=False, overwrite=True)
        stored.append(name)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("-", "notebook execution time (default parameters)")
        for name, secs in sorted(_seconds.items(), key=lambda kv: -kv[1]):
            flag = "" if name not in _failed else "  FAILED"
            reporter.write_line(f"{name:<28} {secs:7.1f} s{flag}")
        reporter.write_line(f"cached for the book build: {len(stored)} notebook(s)")
