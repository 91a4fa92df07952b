"""GPU check: one short run that exercises every CUDA code path of the library and times the `paper` presets.

    PYTHONPATH=lib python3 bench/gpu_check.py --out runs/gpu-check      # what `make gpu-check` runs
    PYTHONPATH=lib python3 bench/gpu_check.py --out DIR --only reversal-paper-eager --only bandwidth

It needs PyTorch, NumPy and this repository's ``lib/`` folder, nothing else (no install step; papermill,
jupytext and matplotlib are not imported unless the notebook check finds papermill installed). On a CUDA
device it measures, within about 8 minutes on one H200:

* the chip itself: copy bandwidth and bf16 / fp32 matrix-multiply rates, for the ratios below;
* correctness: the reversal-curse default run (the notebook's parameters and data) in fp32, bf16 autocast,
  compiled and CUDA-graph (``reduce-overhead``) form, batched seeds against separate runs: the chapter's
  claims must hold in each, and the early training losses must agree within the tolerances in ``TOL``;
* the reversal ``paper`` preset (10 seeds x 172M parameters): ms/step eager, compiled and with CUDA graphs,
  peak memory, the projected 3000-epoch time against 10 minutes, and the fraction of the AdamW
  memory-traffic floor reached (AdamW bytes per step / measured copy bandwidth, over the step time);
* the chain-of-thought, capacity and shortest-path ``paper`` presets: step time, projected total, peak
  memory and model FLOP utilisation against the measured matmul rate;
* the capacity trainer's command line under ``torchrun --nproc_per_node 1`` (DDP with one rank);
* one notebook end to end through the ``reasoning-lab run`` command, where papermill is installed.

Every check runs in its own try/except with its own time budget; the JSON (``gpu-check.json`` in ``--out``)
is rewritten atomically after each check and phase, so a run that is killed keeps what it measured. The
summary table is printed last. Without CUDA the same checks run at a small size on the CPU ("CPU mode"),
which tests the script, not the speed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 600.0                  # the reversal paper preset on one GPU
ADAMW_BYTES_PER_PARAM = 28              # fused AdamW, fp32: read param, grad, m, v; write param, m, v

# Early-training agreement: the largest relative difference of the per-epoch training loss over the first
# TOL_EPOCHS epochs (18 steps; every seed), against the batched fp32 run. Later epochs are not compared: at
# learning rate 0.01 the trajectories separate by rounding alone. Measured on the CPU (3 seeds, the
# default run): separate fp32 runs stay within 4e-7 of the batched run over epochs 1-3 and reach 1e-3 by
# epoch 8; bf16 autocast (CPU kernels) differs by up to 1.2e-2 over epochs 1-3 and 0.2 by epoch 10. By
# the end only the chapter's claims are checked (the chapter reports batched and separate runs 2-6 nats
# apart in held-out NLL).
TOL_EPOCHS = 3
TOL = {
    "separate-fp32": 1e-4,      # the same arithmetic up to float rounding (mm vs batched mm, LayerNorm)
    "batched-bf16": 0.05,       # bf16 autocast in the forward pass (8-bit mantissa)
    "compiled-bf16": 0.05,      # compiled kernels, bf16
    "cudagraphs-bf16": 0.05,    # compiled kernels replayed as CUDA graphs, bf16
}
TOL_GRAPHS_VS_COMPILED = 0.02   # the same compiled kernels with and without CUDA graphs


# ---------------------------------------------------------------------------------------------------
# Adapters: every call into the library is in this section (the study-level entry points the notebooks
# use), so that a change of the library's internals means editing only these functions.

def lib():
    import reasoning_lab as lab

    return lab


def preset(name: str, which: str = "paper", overrides: dict | None = None) -> dict:
    """An experiment's validated parameters: notebook defaults, then the preset, then ``overrides``."""
    from reasoning_lab.experiments import get

    return get(name).resolve(which, overrides or {})


def reversal_schedule(p: dict) -> tuple[int, float]:
    """The reversal chapter's epochs and learning rate (its parameters say 0 for "from the schedule")."""
    from reasoning_lab.studies.reversal.runs import curse_schedule

    return curse_schedule(p["word_size"], p["pos_encoding"], p["epochs"], p["lr"])


def reversal_sets(p: dict, seeds: list[int]) -> list:
    from reasoning_lab.studies.reversal import task as rv

    return [rv.make_reversal_data(p["vocab_size"], p["word_size"], seed=s) for s in seeds]


def chain_sets(p: dict, seeds: list[int]) -> list:
    from reasoning_lab.studies.chain import task as chain

    return [chain.make_chain_data(p["vocab_size"], p["word_size"], seed=s,
                                  held_out_fraction=p["held_out_fraction"]) for s in seeds]


def build_lm_models(p: dict, vocab_size: int, max_len: int, seeds: list[int], device=None) -> list:
    """One notebook transformer per seed (``lab.build_models`` + ``lab.model_from_params``), built on the
    CPU as the notebooks do, or directly on ``device`` (faster; the values differ, the timing does not)."""
    lab = lib()
    where = torch.device(device) if device is not None else contextlib.nullcontext()
    with where:
        return lab.build_models(lambda _s: lab.model_from_params(p, vocab_size, max_len=max_len), seeds)


def lm_sizes(p: dict, vocab_size: int, max_len: int) -> dict:
    """Parameter counts of one notebook transformer, without building it."""
    lab = lib()
    with torch.device("meta"):
        m = lab.model_from_params(p, vocab_size, max_len=max_len)
    counts = lab.count_params(m.cfg)
    return {"total": m.num_params(), "non_embedding": counts["non_embedding"]}


def _lm_config(p: dict, seed: int, device, *, epochs: int, bf16: bool, compile, eval_every: int):
    lab = lib()
    cfg = lab.config_from_params({**p, "epochs": epochs, "compile": compile}, seed=seed, device=device,
                                 eval_every=eval_every)
    cfg.bf16, cfg.progress = bf16, False
    if hasattr(cfg, "bf16_cpu"):            # a loop that can autocast on the CPU: test that path there
        cfg.bf16_cpu = bf16
    return cfg


def train_lm_seeds(p: dict, models: list, sets: list, splits: list, seeds: list[int], device, *,
                   bf16: bool, compile, epochs: int, eval_every: int, on_epoch_end=None) -> list:
    """All seeds as one batched model, as ``rv.fit_seeds`` and the chain notebook run them
    (``lab.train_seeds`` on the notebook's ``config_from_params``); returns one History per seed."""
    cfg = _lm_config(p, seeds[0], device, epochs=epochs, bf16=bf16, compile=compile, eval_every=eval_every)
    return lib().train_seeds(models, list(sets), cfg, list(splits), seeds, on_epoch_end=on_epoch_end)


def train_lm_alone(p: dict, vocab_size: int, max_len: int, train_data, splits: dict, seed: int, device, *,
                   bf16: bool, epochs: int, eval_every: int):
    """One seed on its own, as ``rv.fit`` does (seed, build, ``lab.train.train``); returns its History."""
    lab = lib()
    lab.seed_everything(seed)
    model = lab.model_from_params(p, vocab_size, max_len=max_len)
    cfg = _lm_config(p, seed, device, epochs=epochs, bf16=bf16, compile=False, eval_every=eval_every)
    return lab.train.train(model, train_data, cfg, splits)


def capacity_setup(p: dict, device):
    """The capacity notebook's data and trainer configuration: (bank, cfg, steps of the full run)."""
    from reasoning_lab.studies import capacity as cap
    from reasoning_lab.studies.capacity import sweep

    vocab = cap.make_vocab(p["n_first_names"], p["n_last_names"], p["n_cities"], p["n_universities"],
                           p["n_employers"], p["n_years"], p["relations"])
    profiles = cap.generate_profiles(p["n_profiles"], vocab, seed=p["seed"])
    bank = cap.QuestionBank(profiles, seed=p["seed"])
    cfg = cap.CapacityConfig(batch_size=p["batch_size"], lr=p["lr"], weight_decay=p["weight_decay"],
                             two_hop=p["two_hop"], hop_ratio=p["hop_ratio"], curriculum=p["curriculum"],
                             device=device, evals=8)
    return bank, cfg, sweep.steps_for(p["exposures"], bank, cfg)


def capacity_sizes(bank, budget: int, n_layers: int) -> dict:
    lab = lib()
    from reasoning_lab.studies import capacity as cap

    mcfg = cap.config_for_budget(budget, n_layers, len(bank.profiles.vocab))
    counts = lab.count_params(mcfg)
    return {"total": counts["total"], "non_embedding": counts["non_embedding"], "d_model": mcfg.d_model}


def capacity_train(bank, budget: int, n_layers: int, cfg, steps: int, seed: int = 0):
    """``steps`` steps of the capacity trainer for one budget (``sweep.train_model``, as the notebook's
    ``train_models``), with one evaluation at the end; returns (model, result with ``.seconds``)."""
    from dataclasses import replace

    from reasoning_lab.studies.capacity import sweep

    return sweep.train_model(bank, budget, n_layers, replace(cfg, steps=steps, evals=1, progress=False), seed)


def capacity_seq_len() -> int:
    from reasoning_lab.studies.capacity.questions import SEQ_LEN

    return SEQ_LEN


def capacity_cli(p: dict, budget: int, exposures: float, device: str, out: Path) -> list[str]:
    """Arguments of ``python -m reasoning_lab.studies.capacity.train`` for the preset's data and depth."""
    return ["-m", "reasoning_lab.studies.capacity.train", "--profiles", str(p["n_profiles"]),
            "--relations", str(p["relations"]), "--budget", str(budget), "--layers", str(p["n_layers"]),
            "--exposures", str(exposures), "--batch-size", str(p["batch_size"]), "--lr", str(p["lr"]),
            "--weight-decay", str(p["weight_decay"]), "--first-names", str(p["n_first_names"]),
            "--last-names", str(p["n_last_names"]), "--years", str(p["n_years"]), "--device", device,
            "--out", str(out)]


def paths_setup(p: dict, device):
    """The shortest-path notebook's model and optimiser: (model on device, Adam, lr schedule, sizes)."""
    from reasoning_lab.studies.shortest_paths import model as spm

    torch.manual_seed(p["seed"])
    model = spm.PathTransformer(p["max_vertices"], p["embed_dim"], p["n_heads"], p["n_layers"], p["ff_dim"],
                                norm_first=p["norm_first"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
    schedule = spm.step_schedule(p["lr"], p["lr_final"], p["warmup_steps"], p["switch_step"])
    return model, opt, schedule, {"max_vertices": p["max_vertices"], "max_tune_vertices": p["max_tune_vertices"]}


def paths_train(model, opt, schedule, sizes: dict, p: dict, steps: int, gen, device, on_step=None):
    """``steps`` pre-training steps on fresh batches (``spm.train_steps``, as the notebook)."""
    from reasoning_lab.studies.shortest_paths import model as spm

    return spm.train_steps(model, opt, "pretrain", steps, p["batch_size"], gen, schedule=schedule, data_kw=sizes,
                           device=device, grad_clip=p["grad_clip"], on_step=on_step)


def paths_batch(p: dict, n: int, gen, sizes: dict):
    from reasoning_lab.studies.shortest_paths import make_batch

    return make_batch("pretrain", n, gen, **sizes)


def notebook_command(name: str, out: Path, device: str) -> list[str]:
    """``reasoning-lab run NAME`` (the installed command's module form, so no install is needed)."""
    return ["-m", "reasoning_lab.experiments.cli", "run", name, "--out", str(out), "-p", f"device={device}"]


# ---------------------------------------------------------------------------------------------------
# Sizes: "full" is what runs on a GPU; "small" (CPU default, `make gpu-check` without a GPU) and "tiny"
# (the unit test) shrink every preset so that the same code runs on a CPU in minutes / seconds.

SMALL_LM = {"n_layers": 2, "n_heads": 4, "embed_dim": 64, "seeds": 2}
TINY_LM = {"n_layers": 1, "n_heads": 2, "embed_dim": 32, "seeds": 2}
SIZES = {
    "full": {"default": {}, "lm": {}, "lm_epochs": 12, "lm_warmup": 2, "chain_epochs": 8,
             "capacity": {}, "capacity_steps": (5, 35), "paths": {}, "paths_steps": 12, "adamw_steps": 10,
             "torchrun_profiles": None, "torchrun_exposures": 3.0, "copy_mib": 2048, "gemm": (8192, 4096),
             "notebook": True},
    "small": {"default": {"seeds": 2}, "lm": SMALL_LM, "lm_epochs": 5, "lm_warmup": 1, "chain_epochs": 4,
              "capacity": {"n_profiles": 500, "budgets": [120_000], "batch_size": 256},
              "capacity_steps": (2, 5),
              "paths": {"n_layers": 2, "batch_size": 512}, "paths_steps": 5, "adamw_steps": 3,
              "torchrun_profiles": 200, "torchrun_exposures": 1.0, "copy_mib": 64, "gemm": (512, 256),
              "notebook": True},
    "tiny": {"default": {"epochs": 4, "seeds": 2}, "lm": TINY_LM, "lm_epochs": 4, "lm_warmup": 1,
             "chain_epochs": 3,
             "capacity": {"n_profiles": 300, "budgets": [120_000], "batch_size": 128}, "capacity_steps": (1, 3),
             "paths": {"n_layers": 1, "batch_size": 256}, "paths_steps": 4, "adamw_steps": 2,
             "torchrun_profiles": 100, "torchrun_exposures": 0.5, "copy_mib": 16, "gemm": (256, 128),
             "notebook": False},
}

# Check name -> (function name, time budget in seconds; --budget-scale multiplies them). The order puts
# what matters most first: if the machine is taken away, the first checks' figures are already in the JSON.
CHECKS = [
    ("environment", "check_environment", 20),
    ("bandwidth", "check_bandwidth", 20),
    ("matmul", "check_matmul", 20),
    ("reversal-paper-eager", "check_reversal_paper_eager", 75),
    ("reversal-default", "check_reversal_default", 45),
    ("chain-paper", "check_chain_paper", 30),
    ("capacity-paper", "check_capacity_paper", 35),
    ("paths-paper", "check_paths_paper", 30),
    ("torchrun", "check_torchrun", 45),
    ("reversal-paper-compiled", "check_reversal_paper_compiled", 150),
    ("reversal-paper-cudagraphs", "check_reversal_paper_cudagraphs", 120),
    ("reversal-default-compiled", "check_reversal_default_compiled", 90),
    ("notebook", "check_notebook", 90),
]
TOTAL_BUDGET = {"cuda": 465.0, "cpu": 150.0}      # seconds; start-up and the table come on top


# ---------------------------------------------------------------------------------------------------
# Plumbing: device sync, time limits, the JSON report

class CheckTimeout(Exception):
    pass


class Failed(Exception):
    """A claim or tolerance did not hold (the check ran; its figures are kept)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CheckTimeout in the main thread after ``seconds`` (a no-op where SIGALRM is unavailable)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def handler(_signum, _frame):
        raise CheckTimeout(f"stopped at its time budget of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Context:
    """What the checks share: the device, the size, the output folder, results of earlier checks."""

    def __init__(self, device: torch.device, size: str, out: Path, report: dict, json_path: Path):
        self.device, self.size, self.out = device, size, out
        self.s = SIZES[size]
        self.report, self.json_path = report, json_path
        self.cache: dict = {}
        self.current: str | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def save(self) -> None:
        write_json_atomic(self.json_path, self.report)

    def partial(self, fig: dict) -> None:
        """Write the running check's figures so far (a killed run keeps them)."""
        if self.current is not None:
            self.report["checks"][self.current] = {"status": "running", "figures": fig}
            self.save()


def _r(x, nd=3):
    return None if x is None else round(float(x), nd)


def _sig(x, n=3):
    """``x`` to ``n`` significant figures: rates that span GFLOP/s on a CPU to PFLOP/s on a GPU."""
    return None if x is None else float(f"{float(x):.{n}g}")


def epoch_times(stamps: list[float], t0: float, warmup: int) -> dict:
    """Per-epoch durations from end-of-epoch time stamps: the first (set-up, compilation), the steady
    median (epochs after ``warmup``, the last left out), and the last (it holds the evaluation)."""
    d = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    steady = d[warmup:-1] or d[-1:]
    return {"first_s": d[0], "steady_s": statistics.median(steady), "last_s": d[-1], "n": len(d),
            "timed_epochs": len(steady)}


# ---------------------------------------------------------------------------------------------------
# Checks. Each fills ``fig`` (kept even when the check fails part-way) and sets fig["summary"], one line
# for the table; it raises Failed when a claim does not hold.

def check_environment(ctx: Context, fig: dict) -> None:
    fig.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               c_compiler=shutil.which("cc") or shutil.which("gcc"))
    for mod in ("numpy", "triton", "papermill", "jupytext", "ipykernel", "matplotlib"):
        fig[mod] = _version(mod)
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        fig.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", sm_count=props.multi_processor_count,
                   bf16_supported=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())
        fig["summary"] = (f"{props.name}, {fig['gpu_memory_gib']} GiB, torch {torch.__version__}, "
                          f"CUDA {torch.version.cuda}, triton {fig['triton'] or 'missing'}")
        if not fig["c_compiler"]:
            fig["warning"] = "no C compiler on PATH: torch.compile's GPU kernels need one (gcc)"
    else:
        fig["summary"] = f"CPU mode: {os.cpu_count()} cores, torch {torch.__version__}"


def _version(mod: str):
    if importlib.util.find_spec(mod) is None:
        return None
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return "present"


def _time_op(fn, device, reps: int, warm: int = 2) -> float:
    """Seconds per call of ``fn`` (device-synchronised)."""
    for _ in range(warm):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def check_bandwidth(ctx: Context, fig: dict) -> None:
    n = ctx.s["copy_mib"] * 2**20 // 4
    src = torch.rand(n, device=ctx.device)
    dst = torch.empty_like(src)
    sec = _time_op(lambda: dst.copy_(src), ctx.device, reps=20 if ctx.cuda else 5)
    bw = 2 * src.numel() * 4 / sec                       # bytes read + written
    fig.update(copy_bytes=2 * src.numel() * 4, copy_seconds=sec, bandwidth_gb_s=_r(bw / 1e9, 1))
    ctx.cache["bandwidth"] = bw
    fig["summary"] = f"copy {bw / 1e9:,.0f} GB/s ({ctx.s['copy_mib']} MiB buffers)"
    del src, dst
    free_memory(ctx.device)


def check_matmul(ctx: Context, fig: dict) -> None:
    n16, n32 = ctx.s["gemm"]
    for name, n, dtype, reps in (("bf16", n16, torch.bfloat16, 30), ("fp32", n32, torch.float32, 10)):
        a = torch.randn(n, n, device=ctx.device, dtype=dtype)
        b = torch.randn(n, n, device=ctx.device, dtype=dtype)
        sec = _time_op(lambda: a @ b, ctx.device, reps=reps if ctx.cuda else 3)
        rate = 2 * n ** 3 / sec
        fig[f"{name}_n"], fig[f"{name}_tflops"] = n, _sig(rate / 1e12)
        ctx.cache[f"{name}_flops"] = rate
        del a, b
    fig["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    fig["summary"] = f"bf16 {fig['bf16_tflops']:,.3g} TFLOP/s, fp32 {fig['fp32_tflops']:,.3g} TFLOP/s"
    free_memory(ctx.device)


# --- the reversal paper preset ----------------------------------------------------------------------

def _paper_models(ctx: Context):
    """The reversal paper preset's data and models, built once (on the CPU, as the notebook) and shared by
    the three timing checks."""
    if "rev_paper" in ctx.cache:
        return ctx.cache["rev_paper"]
    p = preset("reversal-curse", "paper", ctx.s["lm"])
    seeds = list(range(p["seed"], p["seed"] + p["seeds"]))
    sets = reversal_sets(p, seeds)
    max_len = p["max_len"] or sets[0].train.tokens.shape[1]
    t0 = time.perf_counter()
    models = build_lm_models(p, sets[0].vocab_size, max_len, seeds)
    build_s = time.perf_counter() - t0
    ctx.cache["rev_paper"] = (p, seeds, sets, models, build_s)
    return ctx.cache["rev_paper"]


def _eval_every(epochs: int) -> int:
    """The chapters' evaluation cadence for a run of ``epochs`` epochs."""
    from reasoning_lab.train import default_eval_every

    return default_eval_every(epochs)


def _lm_timing(ctx: Context, fig: dict, p: dict, seeds, models, train, splits, *, compile, eval_every_full,
               epochs: int, warmup: int) -> None:
    """Train ``epochs`` epochs (evaluation only in the last), time each, project the preset's full run."""
    device = ctx.device
    n_train = len(train[0])
    steps_per_epoch = math.ceil(n_train / p["batch_size"])
    stamps: list[float] = []

    def hook(_epoch, _histories):
        sync(device)
        stamps.append(time.perf_counter())

    reset_peak(device)
    t0 = time.perf_counter()
    histories = train_lm_seeds(p, models, train, splits, seeds, device, bf16=True, compile=compile,
                               epochs=epochs, eval_every=epochs, on_epoch_end=hook)
    t = epoch_times(stamps, t0, warmup)
    full = p["epochs"]
    n_evals = math.ceil(full / eval_every_full)
    eval_s = max(0.0, t["last_s"] - t["steady_s"])
    projected = full * t["steady_s"] + n_evals * eval_s
    step_s = t["steady_s"] / steps_per_epoch
    S = len(seeds)
    fig.update(seeds=S, epochs_trained=epochs, warmup_epochs=warmup, timed_epochs=t["timed_epochs"],
               steps_per_epoch=steps_per_epoch, train_sentences=n_train, step_ms=_r(1000 * step_s),
               epoch_s=_r(t["steady_s"], 4), first_epoch_s=_r(t["first_s"]), eval_s=_r(eval_s),
               full_epochs=full, evaluations_full=n_evals, projected_train_s=_r(projected, 1),
               projected_train_min=_r(projected / 60, 2), peak_gib=peak_gib(device),
               final_train_loss=_r(statistics.mean(h["train_loss"][-1] for h in histories), 5))
    bw = ctx.cache.get("bandwidth")
    if bw:
        adamw_bytes = ADAMW_BYTES_PER_PARAM * S * fig["params_per_seed"]
        floor_s = adamw_bytes / bw
        fig.update(adamw_bytes_per_step=adamw_bytes, adamw_floor_ms=_r(1000 * floor_s),
                   adamw_floor_fraction=_r(floor_s / step_s, 3))
    flops = ctx.cache.get("bf16_flops")
    if flops:
        tokens = S * p["batch_size"] * (train[0].tokens.shape[1] - 1)
        step_flops = 6 * fig["non_embedding_per_seed"] * tokens
        fig.update(flops_per_step_estimate=step_flops, mfu_bf16=_r(step_flops / step_s / flops, 5))
    full_size = ctx.size == "full"
    fig["meets_target"] = bool(full_size and projected <= TARGET_SECONDS)


def _paper_summary(fig: dict, name: str) -> str:
    s = (f"{fig['step_ms']:.1f} ms/step, {fig['projected_train_min']:.1f} min projected "
         f"(target <= {TARGET_SECONDS / 60:.0f})")
    if fig.get("adamw_floor_fraction") is not None:
        s += f", AdamW floor {100 * fig['adamw_floor_fraction']:.0f}%"
    if fig.get("peak_gib") is not None:
        s += f", peak {fig['peak_gib']:.1f} GiB"
    return s


def _reversal_paper(ctx: Context, fig: dict, compile) -> None:
    p, seeds, sets, models, build_s = _paper_models(ctx)
    sizes = lm_sizes(p, sets[0].vocab_size, p["max_len"] or sets[0].train.tokens.shape[1])
    fig.update(params_per_seed=sizes["total"], non_embedding_per_seed=sizes["non_embedding"],
               layers=p["n_layers"], width=p["embed_dim"], cpu_build_s=_r(build_s, 1),
               compile=compile or "eager", bf16_autocast=ctx.cuda,
               shrunk=ctx.size != "full")
    ctx.partial(fig)
    try:
        _lm_timing(ctx, fig, p, seeds, models, [d.train for d in sets],
                   [{"train": d.train, "valid": d.valid} for d in sets], compile=compile,
                   eval_every_full=_eval_every(p["epochs"]), epochs=ctx.s["lm_epochs"],
                   warmup=ctx.s["lm_warmup"])
    finally:
        for m in models:          # back to the CPU, as built: the next mode starts from the same place
            m.cpu()
        if compile:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        free_memory(ctx.device)
    fig["projected_wall_s"] = _r(build_s + fig["first_epoch_s"] + fig["projected_train_s"]
                                 - fig["epoch_s"], 1)
    fig["summary"] = _paper_summary(fig, "reversal")


def check_reversal_paper_eager(ctx: Context, fig: dict) -> None:
    _reversal_paper(ctx, fig, compile=False)
    fig["summary"] = f"{fig['params_per_seed'] / 1e6:,.1f}M x {fig['seeds']}: " + fig["summary"]
    # AdamW alone on tensors of the same total size: how close the optimiser itself gets to the floor
    n = fig["seeds"] * fig["params_per_seed"]
    chunks = [min(n - i, 1 << 26) for i in range(0, n, 1 << 26)]
    params = [torch.zeros(c, device=ctx.device, requires_grad=True) for c in chunks]
    for q in params:
        q.grad = torch.full_like(q, 1e-3)
    fused = {"fused": True} if ctx.device.type in ("cuda", "cpu") else {}
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **fused)
    sec = _time_op(opt.step, ctx.device, reps=ctx.s["adamw_steps"])
    fig["adamw_alone_ms"] = _r(1000 * sec)
    if ctx.cache.get("bandwidth"):
        fig["adamw_alone_floor_fraction"] = _r(ADAMW_BYTES_PER_PARAM * n / ctx.cache["bandwidth"] / sec)
    del params, opt
    free_memory(ctx.device)


def check_reversal_paper_compiled(ctx: Context, fig: dict) -> None:
    _reversal_paper(ctx, fig, compile=True)
    if not ctx.cuda:
        fig["note"] = "CPU mode: the library compiles on CUDA only, so this ran eager"


def check_reversal_paper_cudagraphs(ctx: Context, fig: dict) -> None:
    _reversal_paper(ctx, fig, compile="reduce-overhead")
    if not ctx.cuda:
        fig["note"] = "CPU mode: the library compiles on CUDA only, so this ran eager"


# --- correctness at the reversal default -------------------------------------------------------------

def _default_setup(ctx: Context):
    if "rev_default" not in ctx.cache:
        p = preset("reversal-curse", "default", ctx.s["default"])
        p["epochs"], p["lr"] = reversal_schedule(p)      # 0 = the chapter's schedule for this setting
        seeds = list(range(p["seed"], p["seed"] + p["seeds"]))
        sets = reversal_sets(p, seeds)
        ctx.cache["rev_default"] = (p, seeds, sets)
    return ctx.cache["rev_default"]


def _default_variant(ctx: Context, *, bf16: bool, compile) -> dict:
    p, seeds, sets = _default_setup(ctx)
    max_len = p["max_len"] or sets[0].train.tokens.shape[1]
    models = build_lm_models(p, sets[0].vocab_size, max_len, seeds)
    t0 = time.perf_counter()
    try:
        hs = train_lm_seeds(p, models, [d.train for d in sets], [{"train": d.train, "valid": d.valid} for d in sets],
                            seeds, ctx.device, bf16=bf16, compile=compile, epochs=p["epochs"], eval_every=1)
    finally:
        if compile:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
    return _variant_record(hs, sets, time.perf_counter() - t0)


def _variant_record(histories, sets, seconds: float) -> dict:
    return {"seconds": _r(seconds, 2),
            "train_prob": statistics.mean(h.last("train_prob") for h in histories),
            "valid_prob": statistics.mean(h.last("valid_prob") for h in histories),
            "chance_prob": sets[0].chance_prob,
            "final_train_loss": statistics.mean(h["train_loss"][-1] for h in histories),
            "train_loss": [list(map(float, h["train_loss"][:TOL_EPOCHS])) for h in histories]}


def _max_rel(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-12) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _judge(ctx: Context, fig: dict, name: str, problems: list[str]) -> None:
    """Put run ``name``'s row into ``fig`` (and the JSON): the chapter's claims, and its early-loss
    difference from the batched fp32 run; what does not hold goes to ``problems``."""
    runs = ctx.cache["rev_default_runs"]
    run, ref = runs[name], runs.get("batched-fp32")
    epochs = _default_setup(ctx)[0]["epochs"]
    fig["epochs"], fig["compared_epochs"] = epochs, min(TOL_EPOCHS, epochs)
    row = {k: (_r(v, 6) if isinstance(v, float) else v) for k, v in run.items() if k != "train_loss"}
    row["claims_hold"] = bool(run["train_prob"] >= 0.99 and run["valid_prob"] <= run["chance_prob"])
    if fig.setdefault("claims_checked", ctx.size != "tiny") and not row["claims_hold"]:
        problems.append(f"{name}: train_prob {run['train_prob']:.4f}, valid_prob {run['valid_prob']:.4g} "
                        f"vs chance {run['chance_prob']:.4g}")
    if ref is not None and name != "batched-fp32":
        dev = _max_rel(run["train_loss"], ref["train_loss"])
        row["early_loss_max_rel_diff"], row["tolerance"] = _r(dev, 6), TOL[name]
        if dev > TOL[name]:
            problems.append(f"{name}: early training loss differs by {dev:.2g} (tolerance {TOL[name]:g})")
    fig[name] = row
    ctx.partial(fig)


def check_reversal_default(ctx: Context, fig: dict) -> None:
    p, seeds, sets = _default_setup(ctx)
    fig.update(seeds=seeds, epochs=p["epochs"], layers=p["n_layers"], width=p["embed_dim"],
               bf16_autocast=ctx.cuda or None)
    if not ctx.cuda:
        fig["note"] = "CPU mode: bf16 autocast is off on the CPU unless the training loop offers it"
    runs, problems = ctx.cache.setdefault("rev_default_runs", {}), []
    try:
        runs["batched-fp32"] = _default_variant(ctx, bf16=False, compile=False)
        _judge(ctx, fig, "batched-fp32", problems)
        runs["batched-bf16"] = _default_variant(ctx, bf16=True, compile=False)
        _judge(ctx, fig, "batched-bf16", problems)
        t0 = time.perf_counter()
        max_len = p["max_len"] or sets[0].train.tokens.shape[1]
        alone = [train_lm_alone(p, d.vocab_size, max_len, d.train, {"train": d.train, "valid": d.valid}, s,
                                ctx.device, bf16=False, epochs=p["epochs"], eval_every=1)
                 for s, d in zip(seeds, sets)]
        runs["separate-fp32"] = _variant_record(alone, sets, time.perf_counter() - t0)
        _judge(ctx, fig, "separate-fp32", problems)
    finally:
        fig["summary"] = _default_summary(fig, ["batched-bf16", "separate-fp32"])
    if problems:
        raise Failed("; ".join(problems))


def _default_summary(fig: dict, names: list[str]) -> str:
    parts = []
    for n in names:
        row = fig.get(n)
        if row and "early_loss_max_rel_diff" in row:
            parts.append(f"{n} {row['early_loss_max_rel_diff']:.1e}<={row['tolerance']:g}")
    claims = [fig[n]["claims_hold"] for n in ["batched-fp32", *names] if n in fig]
    if not claims:
        return "no run finished"
    if not fig.get("claims_checked"):
        head = "claims not checked at this size"
    else:
        head = "claims hold" if all(claims) else "CLAIMS FAIL"
    return head + (f" ({len(claims)} runs); early loss " + ", ".join(parts) if parts else f" ({len(claims)} runs)")


def check_reversal_default_compiled(ctx: Context, fig: dict) -> None:
    if not ctx.cuda:
        fig["note"] = "CPU mode: the library compiles on CUDA only, so these ran eager"
    runs, problems = ctx.cache.setdefault("rev_default_runs", {}), []
    try:
        if "batched-fp32" not in runs:
            runs["batched-fp32"] = _default_variant(ctx, bf16=False, compile=False)
        _judge(ctx, fig, "batched-fp32", problems)
        runs["compiled-bf16"] = _default_variant(ctx, bf16=True, compile=True)
        _judge(ctx, fig, "compiled-bf16", problems)
        runs["cudagraphs-bf16"] = _default_variant(ctx, bf16=True, compile="reduce-overhead")
        _judge(ctx, fig, "cudagraphs-bf16", problems)
        dev = _max_rel(runs["cudagraphs-bf16"]["train_loss"], runs["compiled-bf16"]["train_loss"])
        fig["cudagraphs_vs_compiled_max_rel_diff"] = _r(dev, 6)
        if dev > TOL_GRAPHS_VS_COMPILED:
            problems.append(f"CUDA graphs vs compiled: early loss differs by {dev:.2g} "
                            f"(tolerance {TOL_GRAPHS_VS_COMPILED:g})")
    finally:
        fig["summary"] = _default_summary(fig, ["compiled-bf16", "cudagraphs-bf16"])
    if problems:
        raise Failed("; ".join(problems))


# --- the other paper presets --------------------------------------------------------------------------

def check_chain_paper(ctx: Context, fig: dict) -> None:
    p = preset("chain-of-thought", "paper", ctx.s["lm"])
    seeds = list(range(p["seed"], p["seed"] + p["seeds"]))
    sets = chain_sets(p, seeds)
    max_len = 2 * p["word_size"] + 1                     # as the notebook
    sizes = lm_sizes(p, sets[0].vocab_size, max_len)
    fig.update(params_per_seed=sizes["total"], non_embedding_per_seed=sizes["non_embedding"],
               layers=p["n_layers"], width=p["embed_dim"], shrunk=ctx.size != "full",
               note="models initialised on the device, then moved to the CPU where the notebook builds them")
    models = [m.cpu() for m in build_lm_models(p, sets[0].vocab_size, max_len, seeds, device=ctx.device)]
    splits = [{"train": d.train, "valid": d.valid, "step1": d.sentences("ab", d.valid_triples),
               "step2": d.sentences("bc", d.valid_triples)} for d in sets]
    try:
        _lm_timing(ctx, fig, p, seeds, models, [d.train for d in sets], splits, compile=False,
                   eval_every_full=_eval_every(p["epochs"]), epochs=ctx.s["chain_epochs"],
                   warmup=ctx.s["lm_warmup"])
    finally:
        del models
        free_memory(ctx.device)
    fig.pop("meets_target", None)
    fig["summary"] = (f"{fig['step_ms']:.1f} ms/step, {fig['projected_train_min']:.1f} min projected"
                      + (f", AdamW floor {100 * fig['adamw_floor_fraction']:.0f}%"
                         if fig.get("adamw_floor_fraction") is not None else "")
                      + (f", peak {fig['peak_gib']:.1f} GiB" if fig.get("peak_gib") is not None else ""))


def check_capacity_paper(ctx: Context, fig: dict) -> None:
    p = preset("capacity", "paper", ctx.s["capacity"])
    bank, cfg, full_steps = capacity_setup(p, ctx.device)
    k1, k2 = ctx.s["capacity_steps"]
    seq = capacity_seq_len()
    fig.update(budgets=p["budgets"], layers=p["n_layers"], batch_size=p["batch_size"], steps_per_model=full_steps,
               shrunk=ctx.size != "full", timing=f"({k2} steps - {k1} steps) / {k2 - k1}, each with one "
                                                 "evaluation; the warm-up run is left out")
    capacity_train(bank, p["budgets"][0], p["n_layers"], cfg, 2)          # warm-up: CUDA context, kernels
    per_budget, total, peak = [], 0.0, 0.0
    flops_rate = ctx.cache.get("bf16_flops")
    for budget in p["budgets"]:
        reset_peak(ctx.device)
        _, r1 = capacity_train(bank, budget, p["n_layers"], cfg, k1)
        model, r2 = capacity_train(bank, budget, p["n_layers"], cfg, k2)
        step_s = (r2.seconds - r1.seconds) / (k2 - k1)
        if step_s <= 0:      # the extra steps cost less than the noise (tiny CPU sizes): whole-run mean
            step_s = r2.seconds / k2
        sz = capacity_sizes(bank, budget, p["n_layers"])
        row = {"budget": budget, "params": model.num_params(), "d_model": sz["d_model"],
               "step_ms": _r(1000 * step_s), "fixed_s": _r(r1.seconds - k1 * step_s),
               "projected_s": _r(full_steps * step_s, 1), "peak_gib": peak_gib(ctx.device)}
        if flops_rate:
            step_flops = 6 * sz["non_embedding"] * p["batch_size"] * (seq - 1)
            row.update(flops_per_step_estimate=step_flops, mfu_bf16=_r(step_flops / step_s / flops_rate, 4))
        per_budget.append(row)
        total += full_steps * step_s
        peak = max(peak, row["peak_gib"] or 0.0)
        fig["models"] = per_budget
        ctx.partial(fig)
        del model
        free_memory(ctx.device)
    fig.update(projected_train_s=_r(total, 1), projected_train_min=_r(total / 60, 2),
               peak_gib=peak if ctx.cuda else None)
    big = per_budget[-1]
    fig["summary"] = (f"{len(per_budget)} models, {total / 60:.1f} min projected; largest "
                      f"{big['params'] / 1e6:.1f}M: {big['step_ms']:.1f} ms/step"
                      + (f", MFU {100 * big['mfu_bf16']:.1f}%" if "mfu_bf16" in big else ""))


def check_paths_paper(ctx: Context, fig: dict) -> None:
    p = preset("shortest-paths", "paper", ctx.s["paths"])
    model, opt, schedule, sizes = paths_setup(p, ctx.device)
    gen = torch.Generator().manual_seed(p["seed"])
    steps = ctx.s["paths_steps"]
    stamps: list[float] = []

    def on_step(_step, _model):
        sync(ctx.device)
        stamps.append(time.perf_counter())

    reset_peak(ctx.device)
    t0 = time.perf_counter()
    log = paths_train(model, opt, schedule, sizes, p, steps, gen, ctx.device, on_step=on_step)
    d = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    step_s = statistics.median(d[2:] if len(d) > 3 else d)
    # the batch generator alone (it runs on the CPU inside every step)
    t1 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        paths_batch(p, p["batch_size"], gen, sizes)
    data_s = (time.perf_counter() - t1) / reps
    total_steps = p["pretrain_steps"] + p["finetune_steps"]
    # FLOPs of one forward + backward of the model on a batch, counted
    flops = None
    with contextlib.suppress(Exception):
        from torch.utils.flop_counter import FlopCounterMode

        e, t, y = (x.to(ctx.device) for x in paths_batch(p, p["batch_size"], gen, sizes))
        model.train()
        with FlopCounterMode(display=False) as fc:
            ((model(e, t) - y.float()) ** 2).mean().backward()
        opt.zero_grad(set_to_none=True)
        flops = fc.get_total_flops()
    fig.update(params=model.num_params(), layers=p["n_layers"], batch_size=p["batch_size"],
               steps_timed=len(d), step_ms=_r(1000 * step_s), data_ms=_r(1000 * data_s),
               data_share=_r(data_s / step_s), final_loss=_r(log.loss[-1], 4),
               total_steps=total_steps, projected_train_s=_r(total_steps * step_s, 1),
               projected_train_min=_r(total_steps * step_s / 60, 2), peak_gib=peak_gib(ctx.device),
               precision="fp32 (as the notebook)", shrunk=ctx.size != "full")
    if flops:
        fig["flops_per_step_counted"] = flops
        for name in ("fp32", "bf16"):
            rate = ctx.cache.get(f"{name}_flops")
            if rate:
                fig[f"mfu_{name}"] = _r(flops / step_s / rate, 4)
    fig["summary"] = (f"{fig['step_ms']:.0f} ms/step ({100 * fig['data_share']:.0f}% batch generation), "
                      f"{fig['projected_train_min']:.1f} min projected"
                      + (f", MFU vs fp32 {100 * fig['mfu_fp32']:.0f}%" if "mfu_fp32" in fig else ""))


# --- subprocess checks ---------------------------------------------------------------------------------

def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "lib"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["REASONING_LAB_QUIET"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return env


def _run(cmd: list[str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; past ``timeout`` the whole group is stopped (torchrun's worker
    and a notebook's kernel included, so that none of them keeps holding the GPU)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
    except BaseException:                          # the time limit, or the check's own alarm
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
                break
        proc.communicate()
        if isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
            raise CheckTimeout(f"{' '.join(cmd[1:6])} ... ran past {timeout:.0f} s") from None
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _tail(text: str, n: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


def check_torchrun(ctx: Context, fig: dict, budget: float = 45.0) -> None:
    p = preset("capacity", "paper", {"n_profiles": ctx.s["torchrun_profiles"]} if ctx.s["torchrun_profiles"]
               else {})
    out = ctx.out / "torchrun"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           *capacity_cli(p, min(p["budgets"]), ctx.s["torchrun_exposures"], ctx.device.type, out)]
    fig["command"] = " ".join(cmd[1:])
    t0 = time.perf_counter()
    proc = _run(cmd, budget)
    fig["seconds_wall"] = _r(time.perf_counter() - t0, 1)
    fig["returncode"] = proc.returncode
    if proc.returncode != 0:
        fig["output_tail"] = _tail(proc.stdout + proc.stderr, 12)
        raise RuntimeError(f"torchrun exited with {proc.returncode}: {_tail(proc.stderr, 3)}")
    metrics = json.loads((out / "metrics.json").read_text())
    fig["metrics"] = metrics
    fig["checkpoint_written"] = (out / "checkpoint.pt").exists()
    fig["ddp"] = bool(metrics.get("distributed", metrics.get("world_size", 1) > 1))
    fig["summary"] = (f"world {metrics.get('world_size')}, {metrics.get('steps')} steps, "
                      f"{metrics.get('seconds', float('nan')):.1f} s training, "
                      f"{fig['seconds_wall']:.0f} s with start-up"
                      + ("" if fig["ddp"] else "; DDP not engaged"))
    if not fig["checkpoint_written"]:
        raise Failed("torchrun run finished without its checkpoint")


def check_notebook(ctx: Context, fig: dict, budget: float = 90.0) -> None:
    missing = [m for m in ("papermill", "jupytext", "ipykernel", "matplotlib") if importlib.util.find_spec(m) is None]
    if "papermill" in missing:
        raise Skipped("papermill not installed")
    if missing:
        raise Skipped(f"{', '.join(missing)} not installed (papermill needs them to run a notebook)")
    if not ctx.s["notebook"]:
        raise Skipped(f"not run at size {ctx.size}")
    name = "reversal-curse"
    out = ctx.out / "notebook" / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, *notebook_command(name, out, ctx.device.type)]
    fig["command"] = " ".join(cmd[1:])
    t0 = time.perf_counter()
    proc = _run(cmd, budget)
    fig["seconds_wall"] = _r(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        fig["output_tail"] = _tail(proc.stdout + proc.stderr, 12)
        raise RuntimeError(f"reasoning-lab run {name} exited with {proc.returncode}: {_tail(proc.stderr, 2)}")
    m = json.loads((out / "metrics.json").read_text())
    fig["metrics"] = {k: v for k, v in m.items() if isinstance(v, (int, float, str))}
    ok = m["train_prob"] >= 0.99 and m["valid_prob"] <= m["chance_prob"]
    fig["claims_hold"] = bool(ok)
    fig["summary"] = (f"{name} in {fig['seconds_wall']:.0f} s: train_prob {m['train_prob']:.3f}, "
                      f"valid_prob {m['valid_prob']:.2g} (chance {m['chance_prob']:.2g})")
    if not ok:
        raise Failed("the chapter's claims do not hold: " + fig["summary"])


class Skipped(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Driver

def print_table(report: dict) -> None:
    meta = report["meta"]
    where = meta.get("gpu") or "CPU mode (no CUDA device)"
    print()
    print(f"GPU check, {meta['date']}: {where}; torch {meta['torch']}, CUDA {meta['cuda']}; size {meta['size']}")
    header = f"{'check':<26} {'status':<7} {'time':>6}  result"
    print(header)
    print("-" * 100)
    for name, entry in report["checks"].items():
        status = entry.get("status", "?")
        secs = entry.get("seconds")
        line = entry.get("figures", {}).get("summary") or entry.get("error") or entry.get("reason") or ""
        if status in ("FAIL", "ERROR", "TIMEOUT") and entry.get("error"):
            line = (entry.get("figures", {}).get("summary", "") + "  " + entry["error"]).strip()
        t = f"{secs:5.0f}s" if isinstance(secs, (int, float)) else "     -"
        print(f"{name:<26} {status:<7} {t}  {line[:160]}")
    counts = {}
    for entry in report["checks"].values():
        counts[entry.get("status")] = counts.get(entry.get("status"), 0) + 1
    print("-" * 100)
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; JSON: {meta['json']}")


def main(argv: list[str] | None = None) -> int:
    names = [c[0] for c in CHECKS]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check",
                    help="folder for gpu-check.json (and the torchrun / notebook outputs)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    ap.add_argument("--size", default=None, help="full (GPU default), small (CPU default) or tiny (unit test)")
    ap.add_argument("--only", action="append", default=[], help=f"run only these checks: {', '.join(names)}")
    ap.add_argument("--skip", action="append", default=[], help="skip these checks")
    ap.add_argument("--budget", type=float, default=None,
                    help="total seconds (default 465 on CUDA, 150 on the CPU); checks that do not fit are skipped")
    ap.add_argument("--budget-scale", type=float, default=1.0,
                    help="multiply every check's own time budget (e.g. 4 on a slow or busy CPU)")
    args = ap.parse_args(argv)
    if args.device not in ("auto", "cuda", "cpu"):
        raise SystemExit(f"gpu_check: --device={args.device!r} is not allowed: expected auto, cuda or cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device=cuda is not allowed here: PyTorch sees no CUDA device")
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    size = args.size or ("full" if device.type == "cuda" else "small")
    if size not in SIZES:
        raise SystemExit(f"gpu_check: --size={size!r} is not allowed: expected one of {', '.join(SIZES)}")
    for n in args.only + args.skip:
        if n not in names:
            raise SystemExit(f"gpu_check: unknown check {n!r}; choose from {', '.join(names)}")
    total_budget = args.budget if args.budget is not None else TOTAL_BUDGET[device.type]
    if total_budget <= 0:
        raise SystemExit(f"gpu_check: --budget={total_budget} is not allowed: expected a positive number of seconds")
    if args.budget_scale <= 0:
        raise SystemExit(f"gpu_check: --budget-scale={args.budget_scale} is not allowed: expected a positive number")

    out = args.out.resolve()
    json_path = out / "gpu-check.json"
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": device.type, "size": size,
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "argv": sys.argv[1:] if argv is None else list(argv), "budget_s": total_budget, "json": str(json_path),
            "tolerances": {"early_epochs": TOL_EPOCHS, **TOL, "cudagraphs-vs-compiled": TOL_GRAPHS_VS_COMPILED}}
    report = {"meta": meta, "checks": {}}
    ctx = Context(device, size, out, report, json_path)
    if device.type == "cpu":        # small models on a CPU: one thread is as fast, and immune to busy cores
        torch.set_num_threads(max(1, int(os.environ.get("REASONING_LAB_THREADS", "1") or 1)))
    print(f"gpu_check: {meta['gpu'] or 'CPU mode'}, size {size}, budget {total_budget:.0f} s -> {json_path}",
          flush=True)

    try:                                            # the library (and NumPy, which it needs) first
        lib()
    except Exception as err:
        report["checks"]["environment"] = {"status": "ERROR", "error": f"import reasoning_lab: {err!r} "
                                           "(run from the repository with PYTHONPATH=lib; NumPy is required)"}
        ctx.save()
        print_table(report)
        return 1

    start = time.perf_counter()
    scale = args.budget_scale
    for name, fn_name, budget in CHECKS:
        if (args.only and name not in args.only) or name in args.skip:
            continue
        left = total_budget - (time.perf_counter() - start)
        budget = min(budget * scale, left)
        if budget < 5:
            report["checks"][name] = {"status": "SKIP", "reason": f"out of time ({left:.0f} s of the budget left)"}
            ctx.save()
            continue
        fig: dict = {}
        ctx.current = name
        entry = {"status": "ok", "budget_s": round(budget), "figures": fig}
        print(f"== {name} (budget {budget:.0f} s)", flush=True)
        t0 = time.perf_counter()
        fn = globals()[fn_name]
        try:
            with time_limit(budget + 5):          # subprocess checks stop themselves at the budget
                if name in ("torchrun", "notebook"):
                    fn(ctx, fig, budget=budget)
                else:
                    fn(ctx, fig)
        except Skipped as err:
            entry.update(status="SKIP", reason=f"skipped: {err}")
        except Failed as err:
            entry.update(status="FAIL", error=str(err))
        except CheckTimeout as err:
            entry.update(status="TIMEOUT", error=str(err))
        except Exception as err:
            first = str(err).splitlines()[0][:300] if str(err) else ""
            entry.update(status="ERROR", error=f"{type(err).__name__}: {first}",
                         traceback=traceback.format_exc(limit=12)[-3000:])
        finally:
            ctx.current = None
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["checks"][name] = entry
        if entry["status"] == "ERROR" and device.type == "cuda":
            free_memory(device)
        ctx.save()
        print(f"   {entry['status']}: {fig.get('summary') or entry.get('error') or entry.get('reason', '')}"[:200],
              flush=True)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    ctx.save()
    print_table(report)
    bad = [n for n, e in report["checks"].items() if e.get("status") in ("FAIL", "ERROR")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
