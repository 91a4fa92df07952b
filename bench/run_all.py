"""Run every benchmark and print a summary table: what is compared, the ratio measured in the same run,
the target, PASS/FAIL.

    python bench/run_all.py [--only NAME ...] [--skip NAME ...] [--json FILE]

Each benchmark is a script in bench/ run in its own process. A script reports its result in a line
``RESULT {"ratio": ..., "target": ..., "pass": ...}``; for a script that prints no such line, the
ratio is read from its output (see BENCHMARKS) and checked against the target given here. A script
that is not in the tree is listed as missing; one that exits with an error fails.
Exit status: 0 when every benchmark present passed.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

RATIO_LINE = re.compile(r"ratio[^:=]*[:=]\s*([0-9][0-9,]*\.?[0-9]*)\s*x", re.IGNORECASE)
# bench_training prints "ours-seeds / hf: <wall>x / <cpu>x" (and a RESULT line); the smaller of the two is taken
OURS_HF = re.compile(r"^\s*ours-seeds / hf:\s*([0-9.]+)x\s*/\s*([0-9.]+)x", re.MULTILINE)


def ratio_line(out: str):
    found = RATIO_LINE.findall(out)
    return float(found[-1].replace(",", "")) if found else None


def ours_vs_hf(out: str):
    found = OURS_HF.findall(out)
    return min(map(float, found[-1])) if found else None


# name, script, arguments, what the ratio compares, minimum ratio and how to read the ratio (both used
# only when the script prints no RESULT line)
BENCHMARKS = [
    ("training", "bench_training.py", [], "reversal default run: our steps/s per seed / Hugging Face GPT-2 (CPU)",
     1.5, ours_vs_hf),
    ("graphs", "bench_graphs.py", [], "vectorized shortest-path samples/s / per-example Python", 50.0, ratio_line),
    ("capacity stream", "bench_capacity_stream.py", [], "question stream / questions the model trains on", 10.0,
     ratio_line),
    ("book build", "bench_book.py", [], "cold-cache book build, 2 cores: serial wall / parallel wall (make book)",
     1.6, ratio_line),
    # GPU only: skipped (and listed as such) where no CUDA device is present
    ("reversal paper", "bench_reversal_paper.py", [], "10 min / projected time of the reversal paper preset, one GPU",
     1.0, ratio_line),
]


def book_build_passes(result: dict) -> bool:
    """The book build's own criterion, from the numbers it reports: the parallel build at least
    ``min_speedup`` (1.6) times faster than the serial one and a peak memory under ``max_rss_gib`` (4 GiB)."""
    try:
        speedup = float(result["serial_s"]) / float(result["parallel_s"])
        return speedup >= float(result.get("min_speedup", 1.6)) and \
            float(result["peak_gib"]) < float(result.get("max_rss_gib", 4.0))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return False


# benchmarks whose RESULT line carries the numbers to check, not only a verdict
CHECKS = {"book build": book_build_passes}


def run_one(name, script, args, what, minimum, read_ratio):
    path = HERE / script
    row = {"name": name, "compares": what, "ratio": None, "target": f">= {minimum:g}x", "status": "MISSING",
           "detail": "", "seconds": 0.0}
    if not path.exists():
        row["detail"] = f"bench/{script} is not in the tree"
        return row, ""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True)
    row["seconds"] = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if result is not None:
        row.update(ratio=result.get("ratio"), target=result.get("target", row["target"]),
                   detail=result.get("detail", ""))
        passed = bool(result.get("pass")) and proc.returncode == 0
        if name in CHECKS:
            passed = passed and CHECKS[name](result)
            row.update({k: result[k] for k in ("serial_s", "parallel_s", "peak_gib") if k in result})
    else:
        row["ratio"] = read_ratio(proc.stdout)
        passed = proc.returncode == 0 and row["ratio"] is not None and row["ratio"] >= minimum
        if row["ratio"] is None:
            row["detail"] = "printed no ratio"
    row["status"] = "PASS" if passed else "FAIL"
    if row["ratio"] is None and proc.returncode == 0 and "skipped" in proc.stdout.lower():
        row["status"], row["detail"] = "SKIP", proc.stdout.strip().splitlines()[-1][:160]
    if proc.returncode != 0 and not row["detail"]:
        row["detail"] = f"exit status {proc.returncode}"
    return row, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], help="run only these (by name)")
    ap.add_argument("--skip", action="append", default=[], help="skip these (e.g. --skip 'book build')")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    ap.add_argument("--keep-book", type=Path, default=None,
                    help="keep the benchmarked book builds in this folder (DIR/serial, DIR/parallel)")
    args = ap.parse_args(argv)
    names = [b[0] for b in BENCHMARKS]
    for n in args.only + args.skip:
        if n not in names:
            ap.error(f"unknown benchmark {n!r}; choose from {', '.join(names)}")
    rows = []
    for bench in BENCHMARKS:
        if (args.only and bench[0] not in args.only) or bench[0] in args.skip:
            continue
        print(f"== {bench[0]} (bench/{bench[1]})", flush=True)
        if bench[0] == "book build" and args.keep_book:
            bench = (*bench[:2], ["--keep", str(args.keep_book)], *bench[3:])
        row, out = run_one(*bench)
        print(out.rstrip() or "   (no output)", flush=True)
        rows.append(row)

    print()
    header = f"{'benchmark':<16} {'ratio':>9}  {'target':<28} {'result':<7} {'time':>6}  compares"
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = (f"{r['ratio']:.2f}x" if r["ratio"] < 10 else f"{r['ratio']:.1f}x") \
            if isinstance(r["ratio"], (int, float)) else "-"
        print(f"{r['name']:<16} {ratio:>9}  {r['target']:<28} {r['status']:<7} {r['seconds']:5.0f}s  {r['compares']}")
        if r["detail"]:
            print(f"{'':<16} {'':>9}  {r['detail']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows}, indent=1))
    failed = [r["name"] for r in rows if r["status"] == "FAIL"]
    missing = [r["name"] for r in rows if r["status"] in ("MISSING", "SKIP")]
    print()
    print(f"{len(rows) - len(failed) - len(missing)} passed, {len(failed)} failed, "
          f"{len(missing)} missing or skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
