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
        widgets = _widget_metadata(name)
        if widgets:
            nb.metadata["widgets"] = widgets
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
