"""Wall time and peak memory of building the whole book, executing every notebook, on 2 CPU cores.

    python bench/bench_book.py [--cores 2] [--keep DIR]

Copies the working tree (tracked and untracked-but-not-ignored files; the vendored JavaScript is linked)
into a temporary folder and runs ``jupyter-book build --all -W`` there with a cold execution cache, pinned
to ``--cores`` CPUs with ``taskset`` (torch/OpenMP threads per kernel: ``--threads``, by default the number
of cores). While it runs, the resident memory of the whole process tree (builder + kernels) is sampled
from /proc every 0.2 s; ``ru_maxrss`` of the children
gives the largest single process. The budget is what SPEC promises: at most 90 s per notebook at its
default size, plus 60 s for Sphinx; ratio = budget / wall time (>= 1 passes), and the tree's peak RSS must
stay under --max-rss-gib. Prints one ``RESULT {json}`` line for bench/run_all.py.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--max-rss-gib", type=float, default=6.0, help="target for the tree's peak RSS")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/torch threads per kernel (default: --cores; 1 is faster when other jobs share the cores)")
    ap.add_argument("--keep", type=Path, default=None, help="build here (kept) instead of a temporary folder")
    args = ap.parse_args(argv)
    jb = ROOT / ".venv" / "bin" / "jupyter-book"
    if not jb.exists():
        print("bench_book: .venv/bin/jupyter-book missing; run `make install` first", file=sys.stderr)
        return 2
    if subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_assets.py")], capture_output=True).returncode:
        print("bench_book: the vendored assets could not be prepared (`make assets`)", file=sys.stderr)
        return 2

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-book-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        copy_tree(work)
        # time every notebook even if one raises (the build still fails, and so does the benchmark)
        cfg = work / "_config.yml"
        cfg.write_text(cfg.read_text().replace("nb_execution_raise_on_error: true",
                                               "nb_execution_raise_on_error: false"))
        notebooks = sorted((work / "notebooks").glob("*.md"))
        import yaml

        toc = (work / "_toc.yml").read_text()
        in_book = [nb for nb in notebooks if f"notebooks/{nb.stem}" in toc]
        cores = list(sorted(os.sched_getaffinity(0)))[:args.cores]
        cmd = [str(jb), "build", str(work), "--all", "-W", "--keep-going"]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
        threads = str(args.threads or args.cores)
        # as `make book`; MPLBACKEND stays unset so that the kernels draw figures inline
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env = dict(env, REASONING_LAB_QUIET="1", PYTHONHASHSEED="0",
                   OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        yaml.safe_load(toc)  # a broken toc fails here, not in the middle of the timing
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        out = proc.stdout.read().decode(errors="replace")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = (work if args.keep else Path(tempfile.gettempdir())) / f"bench-book-{os.getpid()}.log"
        if proc.returncode != 0 or args.keep:
            log.write_text(out)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    max_single = after.ru_maxrss / 2**20  # KiB -> GiB
    budget = PER_NOTEBOOK_S * len(in_book) + SPHINX_S
    ok = proc.returncode == 0
    if not ok:
        # the first execution error (myst-nb prints the failing cell and its exception), then the log's path
        start = max(0, out.find("Exception encountered at"), out.find("CellExecutionError"))
        print(out[start:start + 3000])
        print(f"(full build log: {log})")
    ratio = budget / wall if ok else None
    rss_ok = peak / 2**30 <= args.max_rss_gib
    print(f"notebooks in the book: {len(in_book)}; cores: {len(cores)} ({','.join(map(str, cores))}), "
          f"{threads} thread(s) per kernel; "
          f"build {'succeeded' if ok else 'FAILED (rc %d)' % proc.returncode}")
    print(f"wall time            : {wall:8.1f} s   (budget {budget:.0f} s = {PER_NOTEBOOK_S:.0f} s x "
          f"{len(in_book)} notebooks + {SPHINX_S:.0f} s)")
    print(f"CPU time (user+sys)  : {cpu:8.1f} s")
    print(f"peak RSS, whole tree : {peak / 2**30:8.2f} GiB  (target <= {args.max_rss_gib:g} GiB)")
    print(f"peak RSS, largest process: {max_single:5.2f} GiB")
    print(f"ratio budget / wall  : {ratio:8.2f}x  (target >= 1x)" if ok else
          "ratio budget / wall  : not given: the build failed")
    print("RESULT " + json.dumps({
        "name": "book build", "ratio": ratio and round(ratio, 2), "target": ">= 1x and peak RSS <= "
        f"{args.max_rss_gib:g} GiB", "pass": bool(ok and ratio >= 1 and rss_ok), "unit": "s",
        "detail": f"{len(in_book)} notebooks: wall {wall:.0f} s, CPU {cpu:.0f} s, peak RSS {peak / 2**30:.2f} GiB "
                  f"(largest process {max_single:.2f} GiB), {len(cores)} cores"}))
    return 0 if ok and ratio >= 1 and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
