"""pytest plugin used by `make test`: after nbval has executed a notebook, store it with its outputs in the
book's execution cache, so the book build that follows reuses those outputs instead of executing every
notebook a second time. Also prints how long each notebook took.

Load with ``-p nbval_cache`` (``tests`` on PYTHONPATH). The cache location and the MyST source folder
come from the environment: NBCACHE_DIR (default _build/.jupyter_cache) and NBCACHE_SOURCES (default
notebooks); the measured durations go to NBCACHE_TIMES (default _build/notebook-seconds.json).

Works under pytest-xdist with ``--dist loadfile --no-loadscope-reorder``: every notebook runs whole on one
worker, which stores it in the cache as soon as its last cell has run; the notebooks are collected
longest first (durations as tools/execute_notebooks.py keeps them), so the longest ones start first; the
workers send their timings to the controller, which prints them and records them for the next run.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

# Kernels must use their inline backend so that figures become outputs (an inherited Agg backend would
# silently drop every figure from the book).
os.environ.pop("MPLBACKEND", None)

_cells: dict[str, list] = defaultdict(list)
_widgets: dict[str, dict[str, dict]] = defaultdict(dict)   # notebook -> comm id -> widget model state
_buffers: dict[str, dict[str, list]] = defaultdict(dict)


def _tap_widget_messages() -> None:
    """nbval reads kernel messages and drops widget (comm) traffic; keep the model states, as a
    notebook front end would, so that saved widgets render in the book."""
    import base64

    from nbval.plugin import IPyNbFile

    original = IPyNbFile.get_kernel_message

    def get_kernel_message(self, timeout=None, stream="iopub"):
        msg = original(self, timeout=timeout, stream=stream)
        if msg.get("msg_type") in ("comm_open", "comm_msg"):
            data = msg["content"].get("data") or {}
            if "state" in data:
                name, comm = Path(str(self.fspath)).stem, msg["content"]["comm_id"]
                _widgets[name].setdefault(comm, {}).update(data["state"])
                for path, buf in zip(data.get("buffer_paths") or [], msg.get("buffers") or []):
                    raw = buf.tobytes() if hasattr(buf, "tobytes") else bytes(buf)
                    _buffers[name].setdefault(comm, []).append(
                        {"data": base64.b64encode(raw).decode(), "encoding": "base64", "path": path})
        return msg

    IPyNbFile.get_kernel_message = get_kernel_message


def pytest_configure(config):
    _tap_widget_messages()
    if not _is_worker(config):  # create the cache database once, before any worker writes to it
        from jupyter_cache import get_cache

        get_cache(os.environ.get("NBCACHE_DIR", "_build/.jupyter_cache")).list_cache_records()


def _widget_metadata(name: str) -> dict | None:
    models = {}
    for comm, state in _widgets.get(name, {}).items():
        if "_model_name" not in state:
            continue
        models[comm] = {"model_name": state["_model_name"], "model_module": state.get("_model_module"),
                        "model_module_version": state.get("_model_module_version"), "state": state}
        if comm in _buffers.get(name, {}):
            models[comm]["buffers"] = _buffers[name][comm]
    if not models:
        return None
    return {"application/vnd.jupyter.widget-state+json": {"state": models, "version_major": 2, "version_minor": 0}}
_failed: set[str] = set()
_seconds: dict[str, float] = defaultdict(float)
_started: dict[str, float] = {}
_expected: dict[str, int] = {}          # notebook -> number of collected cells
_stored: list[str] = []
_from_workers: dict[str, dict] = {}     # controller under xdist: notebook -> what its worker reported

_TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _timings():
    """tools/execute_notebooks.py: the recorded or estimated durations, one place for both executors."""
    if str(_TOOLS) not in sys.path:
        sys.path.insert(0, str(_TOOLS))
    import execute_notebooks

    return execute_notebooks


def _times_file() -> Path:
    return Path(os.environ.get("NBCACHE_TIMES", "_build/notebook-seconds.json"))


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _nb_name(item) -> str | None:
    if type(item).__name__ != "IPyNbCell":
        return None
    return Path(str(item.parent.fspath)).stem


def pytest_collection_modifyitems(session, config, items):
    """Longest notebook first, cells in their order (a stable sort by the notebook's expected time)."""
    names = [_nb_name(it) for it in items]
    est = _timings().estimated_seconds({n for n in names if n}, _times_file())
    order = {n: i for i, n in enumerate(sorted(est, key=lambda n: (-est[n], n)))}
    keyed = sorted(zip(names, range(len(items)), items),
                   key=lambda t: (order.get(t[0], len(order)), t[1]))
    items[:] = [it for _, _, it in keyed]
    _expected.clear()
    for n in names:
        if n:
            _expected[n] = _expected.get(n, 0) + 1


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
        if len(_cells[name]) == _expected.get(name):
            _store(name)


def _store(name: str) -> None:
    """Put one fully executed notebook into the cache (right away, so that two workers rarely write at
    the same moment; sqlite serializes them if they do)."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import read_myst_markdown_notebook

    source = Path(os.environ.get("NBCACHE_SOURCES", "notebooks")) / f"{name}.md"
    if name in _failed or not source.exists():
        return
    nb = read_myst_markdown_notebook(source.read_text(), path=source)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    ran = [it for it in _cells[name] if getattr(it, "test_outputs", None) is not None]
    if len(ran) != len(code_cells):
        return
    for count, (cell, item) in enumerate(zip(code_cells, ran), start=1):
        cell.outputs = [nbformat.from_dict(dict(o)) for o in item.test_outputs]
        for out in cell.outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = count
        cell.execution_count = count
    widgets = _widget_metadata(name)
    if widgets:
        nb.metadata["widgets"] = widgets
    cache = get_cache(os.environ.get("NBCACHE_DIR", "_build/.jupyter_cache"))
    cache.cache_notebook_bundle(CacheBundleIn(nb, str(source.resolve()),
                                              data={"execution_seconds": _seconds[name]}),
                                check_validity=False, overwrite=True)
    _stored.append(name)


def _report() -> dict[str, dict]:
    return {n: {"seconds": s, "failed": n in _failed, "stored": n in _stored} for n, s in _seconds.items()}


def pytest_sessionfinish(session, exitstatus):
    if _is_worker(session.config):
        session.config.workeroutput["nbval_cache"] = _report()


@pytest.hookimpl(optionalhook=True)   # an xdist hook: only called, and only known, with pytest-xdist
def pytest_testnodedown(node, error):
    _from_workers.update(getattr(node, "workeroutput", {}).get("nbval_cache", {}))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    notebooks = _from_workers or _report()
    if not notebooks:
        return
    ok = {n: r["seconds"] for n, r in notebooks.items() if not r["failed"]}
    if ok:
        _timings().record_seconds(ok, _times_file())
    terminalreporter.write_sep("-", "notebook execution time (default parameters)")
    for name, r in sorted(notebooks.items(), key=lambda kv: -kv[1]["seconds"]):
        flag = "  FAILED" if r["failed"] else ""
        terminalreporter.write_line(f"{name:<28} {r['seconds']:7.1f} s{flag}")
    stored = sum(r["stored"] for r in notebooks.values())
    terminalreporter.write_line(f"cached for the book build: {stored} notebook(s)")
