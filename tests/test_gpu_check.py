"""bench/gpu_check.py cannot meet a GPU in CI: run it in CPU mode at its smallest size, where every check
runs the same code as on a GPU (the library trains eager on the CPU), and check the JSON it leaves."""
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU mode; on a GPU run the script itself")
def test_cpu_mode_runs_every_check_and_writes_every_figure(tmp_path, capsys):
    # generous budgets: a busy CI machine must not turn a check into a timeout
    rc = gpu_check.main(["--device", "cpu", "--size", "tiny", "--out", str(tmp_path), "--budget", "900",
                         "--budget-scale", "6"])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    checks, meta = report["checks"], report["meta"]
    assert rc == 0
    assert list(checks) == [name for name, _, _ in gpu_check.CHECKS]
    assert meta["mode"] == "cpu" and meta["torch"] == torch.__version__ and meta["date"][:2] == "20"
    for name, entry in checks.items():
        expected = "SKIP" if name == "notebook" else "ok"
        assert entry["status"] == expected, (name, entry)
    assert checks["notebook"]["reason"].startswith("skipped:")

    fig = {name: entry.get("figures", {}) for name, entry in checks.items()}
    assert fig["bandwidth"]["bandwidth_gb_s"] > 0
    assert fig["matmul"]["bf16_tflops"] > 0 and fig["matmul"]["fp32_tflops"] > 0
    for name in ("reversal-paper-eager", "reversal-paper-compiled", "reversal-paper-cudagraphs", "chain-paper"):
        f = fig[name]
        assert f["step_ms"] > 0 and f["shrunk"] is True and f["full_epochs"] == 3000, name
        # the projection is the steady epoch time over the preset's 3000 epochs plus its evaluations
        assert f["projected_train_s"] == pytest.approx(
            f["full_epochs"] * f["epoch_s"] + f["evaluations_full"] * f["eval_s"], rel=1e-2, abs=0.2)
        assert f["adamw_floor_fraction"] > 0 and f["adamw_bytes_per_step"] == 28 * f["seeds"] * f["params_per_seed"]
    from reasoning_lab.train import EVALUATIONS_PER_RUN       # the presets' 3000 epochs: every 100th
    assert fig["reversal-paper-eager"]["evaluations_full"] == EVALUATIONS_PER_RUN == 3000 // 100
    assert fig["chain-paper"]["evaluations_full"] == EVALUATIONS_PER_RUN
    assert fig["reversal-paper-eager"]["meets_target"] is False            # a shrunk run never meets it
    assert fig["reversal-paper-eager"]["adamw_alone_ms"] > 0

    # correctness: batched and separate fp32 runs agree early, every variant ran (claims need 100 epochs)
    d = fig["reversal-default"]
    assert d["claims_checked"] is False
    assert d["separate-fp32"]["early_loss_max_rel_diff"] <= gpu_check.TOL["separate-fp32"]
    for name in ("compiled-bf16", "cudagraphs-bf16"):
        assert fig["reversal-default-compiled"][name]["early_loss_max_rel_diff"] <= gpu_check.TOL[name]

    cap = fig["capacity-paper"]
    assert cap["models"] and all(m["step_ms"] > 0 and m["params"] <= m["budget"] for m in cap["models"])
    assert cap["projected_train_s"] > 0 and cap["models"][0]["mfu_bf16"] > 0
    paths = fig["paths-paper"]
    assert paths["step_ms"] > 0 and 0 < paths["data_share"] and paths["flops_per_step_counted"] > 0
    tr = fig["torchrun"]
    assert tr["ddp"] is True and tr["metrics"]["world_size"] == 1 and tr["checkpoint_written"]

    lines = out.rstrip().splitlines()                          # the table is printed last
    assert lines[-1].endswith(f"JSON: {tmp_path / 'gpu-check.json'}")
    assert any(line.startswith("check ") and "status" in line for line in lines[-20:])
    assert "CPU mode" in out


def test_bad_options_fail_before_any_work(tmp_path):
    for argv, word in ((["--size", "huge"], "--size"), (["--device", "tpu"], "--device"),
                       (["--only", "nothing"], "nothing"), (["--budget", "0"], "--budget")):
        with pytest.raises(SystemExit) as err:
            gpu_check.main([*argv, "--out", str(tmp_path)])
        assert word in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "gpu-check.json").exists()


def test_epoch_times_and_time_limit():
    t = gpu_check.epoch_times([1.0, 2.0, 3.5, 4.5, 7.0], t0=0.0, warmup=1)
    assert (t["first_s"], t["steady_s"], t["last_s"], t["timed_epochs"]) == (1.0, 1.0, 2.5, 3)
    start = time.perf_counter()
    with pytest.raises(gpu_check.CheckTimeout):
        with gpu_check.time_limit(0.2):
            time.sleep(5)
    assert time.perf_counter() - start < 2
