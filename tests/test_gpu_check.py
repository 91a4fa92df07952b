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
        # the projection is the steady step time over the preset's 3000 epochs plus its evaluations
        assert f["projected_train_s"] == pytest.approx(
            f["full_epochs"] * f["steps_per_epoch"] * f["step_ms"] / 1000 + f["evaluations_full"] * f["eval_s"],
            rel=1e-2, abs=0.2)
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
    assert "train capacity --preset paper" in tr["command"]

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


def test_every_timed_run_is_the_experiments_own_run(monkeypatch, tmp_path):
    """The check trains nothing of its own: every run it times is Experiment.train, at the preset's
    parameters (shrunk by the size table) and on its device."""
    from reasoning_lab.experiments import registry

    calls = []
    original = registry.Experiment.train

    def spy(self, p, device, checkpoint=None, hooks=(), **loop):
        calls.append((self.name, p))
        return original(self, p, device, checkpoint, hooks, **loop)

    monkeypatch.setattr(registry.Experiment, "train", spy)
    for check in ("reversal-paper-eager", "chain-paper", "capacity-paper", "paths-paper", "reversal-default"):
        assert gpu_check.main(["--device", "cpu", "--size", "tiny", "--out", str(tmp_path), "--only", check,
                               "--budget", "600", "--budget-scale", "6"]) == 0
    names = {n for n, _ in calls}
    assert names == {"reversal-curse", "chain-of-thought", "capacity", "shortest-paths"}
    paper = registry.get("reversal-curse").resolve("paper", gpu_check.SIZES["tiny"]["lm"])
    timed = next(p for n, p in calls if n == "reversal-curse" and p["vocab_size"] == 800 and p["n_layers"] == 1
                 and p["max_len"] == 1024)
    assert {k: v for k, v in timed.items() if k not in ("epochs", "compile", "device")} == \
        {k: v for k, v in paper.items() if k not in ("epochs", "compile", "device")}


def test_time_limit():
    start = time.perf_counter()
    with pytest.raises(gpu_check.CheckTimeout):
        with gpu_check.time_limit(0.2):
            time.sleep(5)
    assert time.perf_counter() - start < 2
