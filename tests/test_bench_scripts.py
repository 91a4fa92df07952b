"""The GPU benchmark cannot run in CI (no GPU there): check on CPU, at a small size, that it still trains
the preset's batched seeds and reports a projection in the RESULT format run_all.py reads."""
import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reversal_paper_bench_projects_the_full_run(capsys):
    bench = _load("bench_reversal_paper")
    assert bench.main(["--device", "cpu", "--small", "--seeds", "2", "--epochs", "3", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 seeds x 602,496 parameters (2 layers, width 128), 340 sentences, 6 batched steps per epoch" in out
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert result["ratio"] > 0 and result["pass"] is False      # a shrunk run never counts as meeting the target
    projected = float(out.split("projected 3000 epochs: ")[1].split(" s")[0])
    assert abs(result["ratio"] - 600 / projected) < 0.02 * result["ratio"]


def test_book_build_row_needs_the_speedup_and_the_memory_limit():
    """run_all checks the book build from the numbers it reports: parallel >= 1.6x faster than serial,
    peak memory < 4 GiB; a RESULT line without them never passes."""
    run_all = _load("run_all")
    ok = {"serial_s": 300.0, "parallel_s": 170.0, "peak_gib": 1.7}
    assert run_all.book_build_passes(ok)
    assert not run_all.book_build_passes(dict(ok, parallel_s=200.0))      # 1.5x
    assert not run_all.book_build_passes(dict(ok, peak_gib=4.0))
    assert not run_all.book_build_passes({"ratio": 2.0, "pass": True})
