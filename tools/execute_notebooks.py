"""Execute the book's notebooks in parallel into its execution cache, longest first.

    python tools/execute_notebooks.py [--jobs N] [--force] notebooks/*.md

`make book` runs this before ``jupyter-book build``: every MyST notebook whose current code is not in the
execution cache (``execute.cache`` in _config.yml) runs in its own kernel, up to ``--jobs`` at a time
(default: the number of CPUs this process may use), each kernel with the environment's thread settings
(the Makefile sets REASONING_LAB_THREADS=1). Executed notebooks, with their saved widget state, go into
the cache, so the book build that follows finds everything there and executes nothing.

Notebooks start longest first, so that the longest one does not start last while the other cores idle.
The durations come from the last run here (``_build/notebook-seconds.json``, written at the end of every
run), else from the committed estimates in ``tools/notebook_seconds.json``; a notebook in neither is
assumed long.

A notebook that raises, times out or loses its kernel fails the run: the notebook, the code cell (its
number and line in the .md source) and the error are printed, the traceback is written to
``_build/logs/<notebook>.log`` and the notebook as far as it ran to ``_build/logs/<notebook>.ipynb``. The
other notebooks still run and are cached. Exit status: 0 when every notebook is in the cache afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ESTIMATES = ROOT / "tools" / "notebook_seconds.json"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def read_notebook(path: Path, source_map: bool = False):
    """The notebook exactly as the book build reads it (so that the cache keys match)."""
    from myst_nb.core.read import read_myst_markdown_notebook

    return read_myst_markdown_notebook(path.read_text(), path=path, add_source_map=source_map)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def estimated_seconds(names, measured: Path) -> dict[str, float]:
    """Expected duration of each notebook: the last local measurement, else the committed estimate."""
    known: dict[str, float] = {}
    for file in (ESTIMATES, measured):
        try:
            known.update({k: float(v) for k, v in json.loads(file.read_text()).items()})
        except (OSError, ValueError, AttributeError):
            pass
    return {n: known.get(n, float("inf")) for n in names}


def longest_first(paths, measured: Path) -> list[Path]:
    est = estimated_seconds([p.stem for p in paths], measured)
    return sorted(paths, key=lambda p: (-est[p.stem], p.stem))


def record_seconds(seconds: dict[str, float], measured: Path) -> None:
    """Merge these durations into the local record (temp file + rename)."""
    try:
        known = json.loads(measured.read_text())
    except (OSError, ValueError):
        known = {}
    known.update({k: round(v, 1) for k, v in seconds.items()})
    measured.parent.mkdir(parents=True, exist_ok=True)
    tmp = measured.with_name(measured.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
    os.replace(tmp, measured)


def execute_one(path: str, timeout: int) -> dict:
    """Run one notebook in a fresh kernel (in a worker process); return it as JSON text with its timing
    or, on failure, where and why it failed."""
    import nbformat
    from nbclient import NotebookClient

    os.environ.pop("MPLBACKEND", None)  # kernels draw inline, or the figures would not reach the book
    source = Path(path)
    nb = read_notebook(source, source_map=True)
    lines = nb.metadata.pop("source_map", None)
    current = {"index": None}

    def on_cell_start(cell, cell_index):
        current["index"] = cell_index

    # no per-cell timing metadata: the cache key covers cell metadata, and the book build looks the
    # notebook up by its source
    client = NotebookClient(nb, timeout=timeout, allow_errors=False, store_widget_state=True,
                            record_timing=False, resources={"metadata": {"path": str(source.parent)}},
                            on_cell_start=on_cell_start)
    t0 = time.perf_counter()
    result = {"name": source.stem, "ok": True, "error": None}
    try:
        client.execute()
    except Exception as err:  # a cell raised, timed out, or the kernel died
        index = current["index"]
        code_no = None if index is None else sum(c.cell_type == "code" for c in nb.cells[:index + 1])
        line = None if index is None or not lines else lines[index]   # the code-cell fence, 1-based
        summary = ANSI.sub("", str(err)).strip().splitlines()
        result.update(ok=False, cell=code_no, line=line, error=type(err).__name__,
                      message=summary[-1] if summary else "",
                      trace=ANSI.sub("", str(err)) + "\n\n" + traceback.format_exc())
    result["seconds"] = time.perf_counter() - t0
    result["notebook"] = nbformat.writes(nb)
    return result


def store(cache, source: Path, notebook_json: str, seconds: float) -> None:
    """Cache the executed notebook under the key of its source: its outputs and notebook metadata (widget
    state, language) on the source's cells, exactly as the book build will read them."""
    import nbformat
    from jupyter_cache.base import CacheBundleIn

    ran = nbformat.reads(notebook_json, as_version=4)
    nb = read_notebook(source)
    if [c.source for c in nb.cells] != [c.source for c in ran.cells]:
        raise RuntimeError(f"{source} changed while it was executed; run again")
    for cell, done in zip(nb.cells, ran.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
    for key in ("widgets", "language_info"):
        if key in ran.metadata:
            nb.metadata[key] = ran.metadata[key]
    cache.cache_notebook_bundle(CacheBundleIn(nb, str(source.resolve()), data={"execution_seconds": seconds}),
                                check_validity=False, overwrite=True)


def is_cached(cache, source: Path) -> bool:
    try:
        cache.match_cache_notebook(read_notebook(source))
        return True
    except KeyError:
        return False


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path, help="MyST notebooks (.md)")
    ap.add_argument("--jobs", type=int, default=None, help="notebooks at once (default: CPUs available)")
    ap.add_argument("--force", action="store_true", help="execute even the notebooks already cached")
    ap.add_argument("--config", type=Path, default=ROOT / "_config.yml",
                    help="book configuration: execute.cache and execute.timeout")
    ap.add_argument("--logs", type=Path, default=None, help="failure logs (default: _build/logs)")
    ap.add_argument("--times", type=Path, default=None,
                    help="where the measured durations are kept (default: _build/notebook-seconds.json)")
    args = ap.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error(f"--jobs must be a positive integer, got {args.jobs}")
    bad = [str(p) for p in args.notebooks if p.suffix != ".md" or not p.is_file()]
    if bad:
        ap.error(f"notebooks must be existing MyST .md files; not: {', '.join(bad)}")

    import yaml
    from jupyter_cache import get_cache

    book = args.config.resolve().parent
    execute = (yaml.safe_load(args.config.read_text()) or {}).get("execute", {})
    cache_dir = book / execute.get("cache", "_build/.jupyter_cache")
    timeout = int(execute.get("timeout", 600))
    logs = args.logs or book / "_build" / "logs"
    times = args.times or book / "_build" / "notebook-seconds.json"
    cache = get_cache(str(cache_dir))

    paths = list(dict.fromkeys(p.resolve() for p in args.notebooks))
    todo = paths if args.force else [p for p in paths if not is_cached(cache, p)]
    todo = longest_first(todo, times)
    jobs = min(args.jobs or available_cpus(), max(len(todo), 1))
    print(f"execute: {len(todo)} of {len(paths)} notebook(s) to run, {jobs} at a time, "
          f"REASONING_LAB_THREADS={os.environ.get('REASONING_LAB_THREADS', 'unset')}", flush=True)
    failed, seconds = [], {}
    t0 = time.perf_counter()
    if todo:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(execute_one, str(p), timeout): p for p in todo}
            for fut in as_completed(futures):
                src = futures[fut]
                rel = os.path.relpath(src, Path.cwd())
                try:
                    res = fut.result()
                except Exception as err:  # the worker process itself died
                    res = {"name": src.stem, "ok": False, "cell": None, "line": None, "seconds": 0.0,
                           "error": type(err).__name__, "message": str(err), "trace": traceback.format_exc(),
                           "notebook": None}
                seconds[res["name"]] = res["seconds"]
                if res["ok"]:
                    try:
                        store(cache, src, res["notebook"], res["seconds"])
                    except RuntimeError as err:
                        res.update(ok=False, cell=None, line=None, error="RuntimeError", message=str(err),
                                   trace=str(err))
                if res["ok"]:
                    print(f"  {res['seconds']:6.1f} s  {rel}", flush=True)
                    continue
                failed.append(src)
                where = "no cell" if res["cell"] is None else \
                    f"code cell {res['cell']}" + (f" (line {res['line']})" if res["line"] else "")
                log = logs / f"{res['name']}.log"
                write_atomic(log, f"{rel}: {where}: {res['error']}\n\n{res['trace']}\n")
                if res["notebook"]:
                    write_atomic(logs / f"{res['name']}.ipynb", res["notebook"])
                print(f"FAILED  {rel}, {where}: {res['error']}: {res['message']}\n"
                      f"        traceback: {os.path.relpath(log, Path.cwd())}", flush=True)
        record_seconds({k: v for k, v in seconds.items()
                        if all(p.stem != k for p in failed)}, times)
    wall = time.perf_counter() - t0
    missing = [p for p in paths if p not in failed and not is_cached(cache, p)]
    if todo:
        print(f"execute: {len(todo) - len(failed)} notebook(s) executed and cached in {wall:.1f} s wall "
              f"({sum(seconds.values()):.1f} s of notebook time)", flush=True)
    for p in missing:
        print(f"NOT CACHED  {os.path.relpath(p, Path.cwd())}: its code is not in {cache_dir}", flush=True)
    if failed:
        print(f"execute: {len(failed)} notebook(s) failed: "
              f"{', '.join(os.path.relpath(p, Path.cwd()) for p in failed)}", flush=True)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
