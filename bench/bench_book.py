"""Building the whole book from a cold cache on 2 CPU cores: notebooks one at a time against in parallel.

    python bench/bench_book.py [--cores 2] [--threads 1] [--keep DIR]

Does what `make book` does, twice in the same run, each time in a fresh copy of the working tree (tracked
and untracked-but-not-ignored files; the vendored JavaScript is linked) with an empty execution cache,
pinned to the same ``--cores`` CPUs with ``taskset``: ``tools/execute_notebooks.py`` executes every
notebook of the book into the cache, then ``jupyter-book build --all -W`` builds the HTML from it. The
serial build runs one notebook at a time (``--jobs 1``, as a plain ``jupyter-book build`` would); the
parallel build runs ``--cores`` notebooks at a time, longest first, as `make book` does. Every kernel
runs ``--threads`` torch/OpenMP threads (1, as in `make book`).

While each build runs, the resident memory of its whole process tree (executor, kernels, Sphinx) is
sampled from /proc every 0.2 s. Passes when the parallel build is at least --min-speedup times faster
than the serial one, its tree's peak memory stays under --max-rss-gib, and it stays within the book's
budget (SPEC: at most 90 s per notebook at its default size, plus 60 s for Sphinx). Prints one
``RESULT {json}`` line for bench/run_all.py.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_NOTEBOOK_S = 90.0
SPHINX_S = 60.0


def tree_rss(root_pid: int) -> int:
    """Sum of VmRSS (bytes) of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/statm") as f:
                rss[int(entry.name)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "_vendor").symlink_to(ROOT / "_vendor")


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[int, float, int, str]:
    """Run ``cmd``; return its exit status, wall seconds, the peak RSS of its process tree and its output."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        out.seek(0)
        return proc.returncode, wall, peak, out.read().decode(errors="replace")


def build(mode: str, jobs: int, cores: list[int], threads: int, keep: Path | None) -> dict:
    """One cold-cache book build in a fresh copy of the tree: execute (``jobs`` at a time), then Sphinx."""
    work = keep / mode if keep else Path(tempfile.mkdtemp(prefix=f"bench-book-{mode}-"))
    if work.exists() and keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)   # mkdtemp has made it already
    py, jb = str(ROOT / ".venv" / "bin" / "python"), str(ROOT / ".venv" / "bin" / "jupyter-book")
    pin = ["taskset", "-c", ",".join(map(str, cores))] if shutil.which("taskset") else []
    # as `make book`; MPLBACKEND stays unset so that the kernels draw figures inline
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env = dict(env, REASONING_LAB_QUIET="1", REASONING_LAB_THREADS=str(threads), PYTHONHASHSEED="0",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYDEVD_DISABLE_FILE_VALIDATION="1")
    rc, notebooks, exec_wall, exec_peak, sphinx_wall, sphinx_peak = 1, [], 0.0, 0, 0.0, 0
    before = after = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        copy_tree(work)
        toc = (work / "_toc.yml").read_text()
        notebooks = [str(nb.relative_to(work)) for nb in sorted((work / "notebooks").glob("*.md"))
                     if f"notebooks/{nb.stem}" in toc]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        rc, exec_wall, exec_peak, exec_out = timed(
            [*pin, py, "tools/execute_notebooks.py", "--jobs", str(jobs), *notebooks], work, env)
        sphinx_out = ""
        if rc == 0:
            rc, sphinx_wall, sphinx_peak, sphinx_out = timed(
                [*pin, jb, "build", ".", "--all", "-W", "--keep-going"], work, env)
            if rc == 0 and "Executing notebook" in sphinx_out:
                rc, sphinx_out = 1, sphinx_out + "\nthe book build executed notebooks itself\n"
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if rc != 0 or keep:
            (work / "bench-book.log").write_text(exec_out + "\n" + sphinx_out)
            if rc != 0 and not keep:
                log = Path(tempfile.gettempdir()) / f"bench-book-{mode}-{os.getpid()}.log"
                shutil.copy(work / "bench-book.log", log)
                print(f"{mode} build FAILED (rc {rc}); log: {log}")
                print("\n".join(line for line in (exec_out + sphinx_out).splitlines()
                                if "FAILED" in line or "Error" in line or "Warning" in line)[:3000])
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return {"ok": rc == 0, "notebooks": len(notebooks), "jobs": jobs, "wall": exec_wall + sphinx_wall,
            "execute": exec_wall, "sphinx": sphinx_wall, "peak": max(exec_peak, sphinx_peak),
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "largest": after.ru_maxrss / 2**20}   # KiB -> GiB, the largest single process so far


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2, help="CPUs to pin both builds to (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per kernel (default 1)")
    ap.add_argument("--min-speedup", type=float, default=1.6, help="target: serial wall / parallel wall")
    ap.add_argument("--max-rss-gib", type=float, default=4.0, help="target for the process tree's peak RSS")
    ap.add_argument("--keep", type=Path, default=None,
                    help="build in DIR/serial and DIR/parallel (kept) instead of temporary folders")
    args = ap.parse_args(argv)
    for name in ("cores", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if not (ROOT / ".venv" / "bin" / "jupyter-book").exists():
        print("bench_book: .venv/bin/jupyter-book missing; run `make install` first", file=sys.stderr)
        return 2
    if subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_assets.py")], capture_output=True).returncode:
        print("bench_book: the vendored assets could not be prepared (`make assets`)", file=sys.stderr)
        return 2
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < args.cores:
        ap.error(f"--cores must be at most the {len(allowed)} CPU(s) this process may use, got {args.cores}")
    cores = allowed[:args.cores]
    load = os.getloadavg()[0]

    runs = {}
    for mode, jobs in (("serial", 1), ("parallel", args.cores)):
        print(f"== {mode}: {jobs} notebook(s) at a time", flush=True)
        runs[mode] = r = build(mode, jobs, cores, args.threads, args.keep)
        print(f"   execute {r['execute']:6.1f} s + Sphinx {r['sphinx']:5.1f} s = wall {r['wall']:6.1f} s; "
              f"CPU {r['cpu']:6.1f} s; peak RSS, whole tree {r['peak'] / 2**30:.2f} GiB"
              + ("" if r["ok"] else "   FAILED"), flush=True)
    load = max(load, os.getloadavg()[0])
    serial, par = runs["serial"], runs["parallel"]
    ok = serial["ok"] and par["ok"]
    n = par["notebooks"]
    ratio = serial["wall"] / par["wall"] if ok else None
    budget = PER_NOTEBOOK_S * n + SPHINX_S
    peak = max(serial["peak"], par["peak"]) / 2**30
    passed = bool(ok and ratio >= args.min_speedup and peak < args.max_rss_gib and par["wall"] <= budget)
    print(f"notebooks in the book: {n}; cores: {len(cores)} ({','.join(map(str, cores))}), "
          f"{args.threads} thread(s) per kernel; load average up to {load:.1f} (1 min)")
    print(f"serial wall time     : {serial['wall']:8.1f} s")
    print(f"parallel wall time   : {par['wall']:8.1f} s   (budget {budget:.0f} s = {PER_NOTEBOOK_S:.0f} s x "
          f"{n} notebooks + {SPHINX_S:.0f} s)")
    print(f"peak RSS, whole tree : {par['peak'] / 2**30:8.2f} GiB parallel, {serial['peak'] / 2**30:.2f} GiB serial "
          f"(target < {args.max_rss_gib:g} GiB); largest process {par['largest']:.2f} GiB")
    print(f"ratio serial / parallel: {ratio:6.2f}x  (target >= {args.min_speedup:g}x)" if ok else
          "ratio serial / parallel: not given: a build failed")
    print("RESULT " + json.dumps({
        "name": "book build", "ratio": ratio and round(ratio, 2),
        "target": f">= {args.min_speedup:g}x and peak RSS < {args.max_rss_gib:g} GiB", "pass": passed, "unit": "s",
        "serial_s": round(serial["wall"], 1), "parallel_s": round(par["wall"], 1), "peak_gib": round(peak, 2),
        "min_speedup": args.min_speedup, "max_rss_gib": args.max_rss_gib,
        "detail": f"{n} notebooks, {len(cores)} cores: serial {serial['wall']:.0f} s, parallel {par['wall']:.0f} s "
                  f"(execute {par['execute']:.0f} s + Sphinx {par['sphinx']:.0f} s), peak RSS "
                  f"{par['peak'] / 2**30:.2f} GiB parallel / {serial['peak'] / 2**30:.2f} GiB serial"}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
