"""GPU check: one short run that exercises every CUDA code path of the library and times the `paper` presets.

    PYTHONPATH=lib python3 bench/gpu_check.py --out runs/gpu-check      # what `make gpu-check` runs
    PYTHONPATH=lib python3 bench/gpu_check.py --out DIR --only reversal-paper-eager --only bandwidth

It needs PyTorch, NumPy and ``lib/``. Every run it times is the experiment's own run (``Experiment.train``,
what the chapters, ``reasoning-lab run/train/sweep`` and the Slurm template train) at the preset's
parameters, for fewer epochs or steps, with a hook that time-stamps every step. On a CUDA device, within
about 8 minutes on one H200: copy bandwidth and bf16/fp32 matmul rates; the reversal-curse default in
fp32, bf16, compiled and CUDA-graph form and each seed alone (a stack of one), whose claims must hold and
whose early losses must agree within ``TOL``; the reversal ``paper`` preset (10 x 172M parameters) eager,
compiled and with CUDA graphs: ms/step, peak memory, the projected 3000-epoch time against 10 minutes and
the fraction of the AdamW memory-traffic floor; the chain, capacity and shortest-path ``paper`` presets:
step time, projection, peak memory and model FLOP utilisation; ``reasoning-lab train capacity`` under
``torchrun`` (DDP with one rank); one chapter through ``reasoning-lab run``. Each check has its own time
budget; ``gpu-check.json`` in ``--out`` is rewritten after each, so a killed run keeps what it measured.
Without CUDA the same checks run at a small size on the CPU ("CPU mode"): that tests the script.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))       # bench/: the harness beside this file
from _harness import (ROOT, CheckTimeout, Context, Failed, Skipped, _r, _run, _sig, _time_op,  # noqa: E402,F401
                      free_memory, peak_gib, print_table, run_checks, sync, time_limit)
TARGET_SECONDS = 600.0                  # the reversal paper preset on one GPU
ADAMW_BYTES_PER_PARAM = 28              # fused AdamW, fp32: read param, grad, m, v; write param, m, v

# Early-training agreement: the largest relative difference of the per-epoch training loss over the first
# TOL_EPOCHS epochs (every seed), against the batched fp32 run. Later epochs are not compared: at learning
# rate 0.01 the trajectories separate by rounding alone. Measured on the CPU (3 seeds, the default run):
# separate fp32 runs stay within 4e-7 of the batched run over epochs 1-3 and reach 1e-3 by epoch 8; bf16
# autocast (CPU kernels) differs by up to 1.2e-2 over epochs 1-3.
TOL_EPOCHS = 3
TOL = {"separate-fp32": 1e-4, "batched-bf16": 0.05, "compiled-bf16": 0.05, "cudagraphs-bf16": 0.05}
TOL_GRAPHS_VS_COMPILED = 0.02   # the same compiled kernels with and without CUDA graphs

# Sizes: "full" runs the presets as they are on a GPU; "small" (CPU default) and "tiny" (the unit test)
# shrink them so that the same code runs on a CPU in minutes / seconds. Epochs and steps are what is timed.
SMALL_LM = {"n_layers": 2, "n_heads": 4, "embed_dim": 64, "seeds": 2}
TINY_LM = {"n_layers": 1, "n_heads": 2, "embed_dim": 32, "seeds": 2}
SIZES = {
    "full": dict(default={}, lm={}, lm_epochs=12, chain_epochs=8, capacity={}, capacity_steps=(5, 35), paths={},
                 paths_steps=12, adamw_steps=10, torchrun={"exposures": 3.0, "budgets": [500_000]}, copy_mib=2048,
                 gemm=(8192, 4096), notebook=True),
    "small": dict(default={"seeds": 2}, lm=SMALL_LM, lm_epochs=5, chain_epochs=4, capacity_steps=(2, 5),
                  capacity={"n_profiles": 500, "budgets": [120_000], "batch_size": 256}, paths_steps=5,
                  paths={"n_layers": 2, "batch_size": 512}, adamw_steps=3, copy_mib=64, gemm=(512, 256),
                  torchrun={"n_profiles": 200, "exposures": 1.0, "budgets": [500_000]}, notebook=True),
    "tiny": dict(default={"epochs": 4, "seeds": 2}, lm=TINY_LM, lm_epochs=4, chain_epochs=3, capacity_steps=(1, 3),
                 capacity={"n_profiles": 300, "budgets": [120_000], "batch_size": 128}, paths_steps=4,
                 paths={"n_layers": 1, "batch_size": 256}, adamw_steps=2, copy_mib=16, gemm=(256, 128),
                 torchrun={"n_profiles": 100, "exposures": 0.5, "budgets": [500_000]}, notebook=False),
}

# Check name -> (function name, time budget in seconds; --budget-scale multiplies them). What matters most
# comes first: if the machine is taken away, the first checks' figures are already in the JSON.
CHECKS = [
    ("environment", "check_environment", 20), ("bandwidth", "check_bandwidth", 20), ("matmul", "check_matmul", 20),
    ("reversal-paper-eager", "check_reversal_paper_eager", 75), ("reversal-default", "check_reversal_default", 45),
    ("chain-paper", "check_chain_paper", 30), ("capacity-paper", "check_capacity_paper", 35),
    ("paths-paper", "check_paths_paper", 30), ("torchrun", "check_torchrun", 45),
    ("reversal-paper-compiled", "check_reversal_paper_compiled", 150),
    ("reversal-paper-cudagraphs", "check_reversal_paper_cudagraphs", 120),
    ("reversal-default-compiled", "check_reversal_default_compiled", 90), ("notebook", "check_notebook", 90),
]
TOTAL_BUDGET = {"cuda": 465.0, "cpu": 150.0}      # seconds; start-up and the table come on top


# ---------------------------------------------------------------------------------------------------
# Every timed run goes through the experiment's own run (Experiment.train) with a step clock.

def params(name: str, which: str, overrides: dict) -> dict:
    """An experiment's validated parameters: notebook defaults, then the preset, then ``overrides``."""
    from reasoning_lab.experiments import get

    return get(name).resolve(which, overrides)


class StepClock:
    """A fit hook that time-stamps the end of every step (device-synchronised)."""

    def __init__(self, device):
        self.device, self.stamps, self.t0 = device, [], time.perf_counter()

    def __call__(self, _done, _histories):
        sync(self.device)
        self.stamps.append(time.perf_counter())

    def durations(self) -> list[float]:
        return [b - a for a, b in zip([self.t0] + self.stamps[:-1], self.stamps)]


def timed_run(ctx: Context, name: str, p: dict, **loop):
    """``Experiment.train`` of ``name`` at ``p`` on the check's device, every step time-stamped; returns the
    trained run, the clock and the wall time including the build."""
    from reasoning_lab.experiments import get

    clock = StepClock(ctx.device)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    t0 = time.perf_counter()
    trained = get(name).train({**p, "device": ctx.device.type}, ctx.device, hooks=[clock], progress=False, **loop)
    return trained, clock, time.perf_counter() - t0


def lm_timing(ctx: Context, fig: dict, name: str, epochs: int, compile) -> None:
    """A sentence chapter's ``paper`` preset for ``epochs`` epochs (one evaluation, at the end): the steady
    step time after the first epoch, the evaluation's cost, the projection over the preset's epochs and
    its ~30 evaluations, the AdamW memory-traffic floor and the model FLOP utilisation."""
    from reasoning_lab.model import count_params
    from reasoning_lab.train import default_eval_every

    full = params(name, "paper", ctx.s["lm"])
    trained, clock, wall = timed_run(ctx, name, {**full, "epochs": epochs, "compile": compile}, eval_every=0)
    n_train = len(trained.data[0].train)
    spe = math.ceil(n_train / full["batch_size"])
    d = clock.durations()
    steady = statistics.median(d[spe:-1] or d[-1:])
    eval_s = max(0.0, d[-1] - steady)
    n_evals = math.ceil(full["epochs"] / default_eval_every(full["epochs"]))
    projected = full["epochs"] * spe * steady + n_evals * eval_s
    S, P = len(trained.models), trained.model.num_params()
    fig.update(seeds=S, params_per_seed=P, non_embedding_per_seed=count_params(trained.model.cfg)["non_embedding"],
               layers=full["n_layers"], width=full["embed_dim"], compile=compile or "eager",
               bf16_autocast=ctx.cuda, shrunk=ctx.size != "full", epochs_trained=epochs, steps_per_epoch=spe,
               train_sentences=n_train, step_ms=_r(1000 * steady), first_epoch_s=_r(sum(d[:spe])),
               eval_s=_r(eval_s), full_epochs=full["epochs"], evaluations_full=n_evals,
               projected_train_s=_r(projected, 1), projected_train_min=_r(projected / 60, 2),
               build_s=_r(wall - sum(d), 1), peak_gib=peak_gib(ctx.device),
               final_train_loss=_r(statistics.mean(h["train_loss"][-1] for h in trained.histories), 5))
    if ctx.cache.get("bandwidth"):
        floor = ADAMW_BYTES_PER_PARAM * S * P / ctx.cache["bandwidth"]
        fig.update(adamw_bytes_per_step=ADAMW_BYTES_PER_PARAM * S * P, adamw_floor_ms=_r(1000 * floor),
                   adamw_floor_fraction=_r(floor / steady, 3))
    if ctx.cache.get("bf16_flops"):
        tokens = S * full["batch_size"] * (trained.data[0].train.tokens.shape[1] - 1)
        step_flops = 6 * fig["non_embedding_per_seed"] * tokens
        fig.update(flops_per_step_estimate=step_flops, mfu_bf16=_r(step_flops / steady / ctx.cache["bf16_flops"], 5))
    fig["meets_target"] = bool(ctx.size == "full" and projected <= TARGET_SECONDS)
    fig["summary"] = (f"{P / 1e6:,.1f}M x {S}: {fig['step_ms']:.1f} ms/step, {fig['projected_train_min']:.1f} min "
                      "projected" + (f", AdamW floor {100 * fig['adamw_floor_fraction']:.0f}%"
                                     if "adamw_floor_fraction" in fig else "")
                      + (f", peak {fig['peak_gib']:.1f} GiB" if fig["peak_gib"] is not None else ""))
    del trained
    if compile:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    free_memory(ctx.device)


# ---------------------------------------------------------------------------------------------------
# Checks. Each fills ``fig`` (kept even when the check fails part-way) and sets fig["summary"], one line
# for the table; it raises Failed when a claim does not hold.

def check_environment(ctx: Context, fig: dict) -> None:
    from importlib.metadata import PackageNotFoundError, version

    for m in ("numpy", "triton", "papermill", "jupytext", "ipykernel", "matplotlib"):
        with contextlib.suppress(PackageNotFoundError):
            fig[m] = None
            fig[m] = version(m)
    fig.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               c_compiler=shutil.which("cc") or shutil.which("gcc"))
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


def check_bandwidth(ctx: Context, fig: dict) -> None:
    src = torch.rand(ctx.s["copy_mib"] * 2**20 // 4, device=ctx.device)
    dst = torch.empty_like(src)
    sec = _time_op(lambda: dst.copy_(src), ctx.device, reps=20 if ctx.cuda else 5)
    bw = ctx.cache["bandwidth"] = 2 * src.numel() * 4 / sec                   # bytes read + written
    fig.update(copy_bytes=2 * src.numel() * 4, copy_seconds=sec, bandwidth_gb_s=_r(bw / 1e9, 1),
               summary=f"copy {bw / 1e9:,.0f} GB/s ({ctx.s['copy_mib']} MiB buffers)")
    del src, dst
    free_memory(ctx.device)


def check_matmul(ctx: Context, fig: dict) -> None:
    for name, n, dtype, reps in (("bf16", ctx.s["gemm"][0], torch.bfloat16, 30), ("fp32", ctx.s["gemm"][1],
                                                                                   torch.float32, 10)):
        a, b = (torch.randn(n, n, device=ctx.device, dtype=dtype) for _ in range(2))
        rate = ctx.cache[f"{name}_flops"] = 2 * n ** 3 / _time_op(lambda: a @ b, ctx.device, reps if ctx.cuda else 3)
        fig[f"{name}_n"], fig[f"{name}_tflops"] = n, _sig(rate / 1e12)
        del a, b
    fig["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    fig["summary"] = f"bf16 {fig['bf16_tflops']:,.3g} TFLOP/s, fp32 {fig['fp32_tflops']:,.3g} TFLOP/s"
    free_memory(ctx.device)


def check_reversal_paper_eager(ctx: Context, fig: dict) -> None:
    lm_timing(ctx, fig, "reversal-curse", ctx.s["lm_epochs"], compile=False)
    # AdamW alone on tensors of the same total size: how close the optimiser itself gets to the floor
    n = fig["seeds"] * fig["params_per_seed"]
    tensors = [torch.zeros(min(n - i, 1 << 26), device=ctx.device, requires_grad=True) for i in range(0, n, 1 << 26)]
    for q in tensors:
        q.grad = torch.full_like(q, 1e-3)
    opt = torch.optim.AdamW(tensors, lr=1e-3, weight_decay=0.01, fused=ctx.device.type in ("cuda", "cpu"))
    sec = _time_op(opt.step, ctx.device, reps=ctx.s["adamw_steps"])
    fig["adamw_alone_ms"] = _r(1000 * sec)
    if ctx.cache.get("bandwidth"):
        fig["adamw_alone_floor_fraction"] = _r(ADAMW_BYTES_PER_PARAM * n / ctx.cache["bandwidth"] / sec)
    del tensors, opt
    free_memory(ctx.device)


def check_reversal_paper_compiled(ctx: Context, fig: dict) -> None:
    lm_timing(ctx, fig, "reversal-curse", ctx.s["lm_epochs"], compile=True)
    if not ctx.cuda:
        fig["note"] = "CPU mode: the library compiles on CUDA only, so this ran eager"


def check_reversal_paper_cudagraphs(ctx: Context, fig: dict) -> None:
    lm_timing(ctx, fig, "reversal-curse", ctx.s["lm_epochs"], compile="reduce-overhead")
    if not ctx.cuda:
        fig["note"] = "CPU mode: the library compiles on CUDA only, so this ran eager"


def check_chain_paper(ctx: Context, fig: dict) -> None:
    lm_timing(ctx, fig, "chain-of-thought", ctx.s["chain_epochs"], compile=False)
    fig.pop("meets_target", None)


# --- correctness at the reversal default: variants of the chapter's own run --------------------------

def _variant(ctx: Context, name: str, *, bf16: bool = True, compile=False, alone: bool = False) -> dict:
    """The chapter's default run (per-epoch evaluations) in one form; ``alone``: each seed on its own."""
    base = {**params("reversal-curse", "default", ctx.s["default"]), "compile": compile, "eval_every": 1}
    seeds = range(base["seed"], base["seed"] + base["seeds"])
    t0 = time.perf_counter()
    runs = [timed_run(ctx, "reversal-curse", {**base, "seed": s, "seeds": 1}, bf16=bf16, bf16_cpu=bf16)[0]
            for s in seeds] if alone else [timed_run(ctx, "reversal-curse", base, bf16=bf16, bf16_cpu=bf16)[0]]
    if compile:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    hs = [h for r in runs for h in r.histories]
    row = {"seconds": _r(time.perf_counter() - t0, 2), "chance_prob": runs[0].metrics["chance_prob"],
           "train_prob": statistics.mean(h.last("train_prob") for h in hs),
           "valid_prob": statistics.mean(h.last("valid_prob") for h in hs),
           "train_loss": [list(map(float, h["train_loss"][:TOL_EPOCHS])) for h in hs]}
    row["claims_hold"] = bool(row["train_prob"] >= 0.99 and row["valid_prob"] <= row["chance_prob"])
    ctx.cache.setdefault("variants", {})[name] = row
    return row


def _judge(ctx: Context, fig: dict, names: list[str], problems: list[str]) -> None:
    variants = ctx.cache["variants"]
    ref = variants["batched-fp32"]
    fig["claims_checked"] = ctx.size != "tiny"          # the tiny size trains too few epochs to fit
    for name in names:
        row = {k: v for k, v in variants[name].items() if k != "train_loss"}
        if fig["claims_checked"] and not row["claims_hold"]:
            problems.append(f"{name}: train_prob {row['train_prob']:.4f}, valid_prob {row['valid_prob']:.4g} "
                            f"vs chance {row['chance_prob']:.4g}")
        if name in TOL:
            dev = max(abs(x - y) / max(abs(y), 1e-12) for a, b in zip(variants[name]["train_loss"], ref["train_loss"])
                      for x, y in zip(a, b))
            row.update(early_loss_max_rel_diff=_r(dev, 6), tolerance=TOL[name])
            if dev > TOL[name]:
                problems.append(f"{name}: early training loss differs by {dev:.2g} (tolerance {TOL[name]:g})")
        fig[name] = row
    held = [fig[n]["claims_hold"] for n in names]
    parts = [f"{n} {fig[n]['early_loss_max_rel_diff']:.1e}<={TOL[n]:g}" for n in names if n in TOL]
    head = ("claims hold" if all(held) else "CLAIMS FAIL") if fig["claims_checked"] else "claims not checked"
    fig["summary"] = f"{head} ({len(held)} runs); early loss " + ", ".join(parts)


def check_reversal_default(ctx: Context, fig: dict) -> None:
    if not ctx.cuda:
        fig["note"] = "CPU mode: bf16 autocast of the CPU kernels"
    problems: list[str] = []
    _variant(ctx, "batched-fp32", bf16=False)
    _variant(ctx, "batched-bf16")
    _variant(ctx, "separate-fp32", bf16=False, alone=True)
    _judge(ctx, fig, ["batched-fp32", "batched-bf16", "separate-fp32"], problems)
    if problems:
        raise Failed("; ".join(problems))


def check_reversal_default_compiled(ctx: Context, fig: dict) -> None:
    if not ctx.cuda:
        fig["note"] = "CPU mode: the library compiles on CUDA only, so these ran eager"
    problems: list[str] = []
    if "batched-fp32" not in ctx.cache.get("variants", {}):
        _variant(ctx, "batched-fp32", bf16=False)
    graphs, compiled = _variant(ctx, "cudagraphs-bf16", compile="reduce-overhead"), _variant(ctx, "compiled-bf16",
                                                                                            compile=True)
    _judge(ctx, fig, ["compiled-bf16", "cudagraphs-bf16"], problems)
    dev = max(abs(x - y) / max(abs(y), 1e-12) for a, b in zip(graphs["train_loss"], compiled["train_loss"])
              for x, y in zip(a, b))
    fig["cudagraphs_vs_compiled_max_rel_diff"] = _r(dev, 6)
    if dev > TOL_GRAPHS_VS_COMPILED:
        problems.append(f"CUDA graphs vs compiled: early loss differs by {dev:.2g} (tolerance {TOL_GRAPHS_VS_COMPILED:g})")
    if problems:
        raise Failed("; ".join(problems))


# --- the capacity and shortest-path presets ----------------------------------------------------------

def check_capacity_paper(ctx: Context, fig: dict) -> None:
    from reasoning_lab.model import count_params
    from reasoning_lab.studies.capacity import report, runs

    p = params("capacity", "paper", ctx.s["capacity"])
    full_steps = runs.steps(p, report.build(p).bank)
    k1, k2 = ctx.s["capacity_steps"]
    fig.update(budgets=p["budgets"], layers=p["n_layers"], batch_size=p["batch_size"], steps_per_model=full_steps,
               shrunk=ctx.size != "full", timing=f"({k2} steps - {k1} steps) / {k2 - k1}, each run with one "
                                                 "evaluation; a warm-up run is left out", models=[])
    one = lambda budget, k: timed_run(ctx, "capacity", {**p, "budgets": [budget]}, steps=k, eval_every=k)
    one(p["budgets"][0], 2)                                              # warm-up: CUDA context, kernels
    total = 0.0
    for budget in p["budgets"]:
        t1, t2 = one(budget, k1)[0], one(budget, k2)[0]
        step_s = (t2.history.seconds - t1.history.seconds) / (k2 - k1)
        if step_s <= 0:      # the extra steps cost less than the noise (tiny CPU sizes): the whole-run mean
            step_s = t2.history.seconds / k2
        model = t2.model
        row = {"budget": budget, "params": model.num_params(), "d_model": model.cfg.d_model,
               "step_ms": _r(1000 * step_s), "projected_s": _r(full_steps * step_s, 1), "peak_gib": peak_gib(ctx.device)}
        if ctx.cache.get("bf16_flops"):
            flops = 6 * count_params(model.cfg)["non_embedding"] * p["batch_size"] * 7
            row.update(flops_per_step_estimate=flops, mfu_bf16=_r(flops / step_s / ctx.cache["bf16_flops"], 4))
        fig["models"].append(row)
        total += full_steps * step_s
        ctx.partial(fig)
        del t1, t2, model
        free_memory(ctx.device)
    big = fig["models"][-1]
    fig.update(projected_train_s=_r(total, 1), projected_train_min=_r(total / 60, 2),
               peak_gib=max(m["peak_gib"] or 0.0 for m in fig["models"]) if ctx.cuda else None,
               summary=f"{len(fig['models'])} models, {total / 60:.1f} min projected; largest {big['params'] / 1e6:.1f}M: "
                       f"{big['step_ms']:.1f} ms/step" + (f", MFU {100 * big['mfu_bf16']:.1f}%" if "mfu_bf16" in big else ""))


def check_paths_paper(ctx: Context, fig: dict) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from reasoning_lab.studies.shortest_paths import make_batch

    p = params("shortest-paths", "paper", ctx.s["paths"])
    k = ctx.s["paths_steps"]
    trained, clock, _ = timed_run(ctx, "shortest-paths", {**p, "pretrain_steps": k, "finetune_steps": 0,
                                                          "eval_batch": min(p["eval_batch"], 1024)})
    d = clock.durations()[:k]
    step_s = statistics.median(d[2:] if len(d) > 3 else d)
    sizes = {"max_vertices": p["max_vertices"], "max_tune_vertices": p["max_tune_vertices"]}
    gen = torch.Generator().manual_seed(p["seed"])
    t0 = time.perf_counter()
    batch = [make_batch("pretrain", p["batch_size"], gen, **sizes) for _ in range(3)][-1]
    data_s = (time.perf_counter() - t0) / 3
    model = trained.model.train()
    e, t, y = (x.to(ctx.device) for x in batch)
    with FlopCounterMode(display=False) as fc:                          # one forward + backward, counted
        ((model(e, t) - y.float()) ** 2).mean().backward()
    total_steps = p["pretrain_steps"] + p["finetune_steps"]
    fig.update(params=model.num_params(), layers=p["n_layers"], batch_size=p["batch_size"], steps_timed=len(d),
               step_ms=_r(1000 * step_s), data_ms=_r(1000 * data_s), data_share=_r(data_s / step_s),
               final_loss=_r(trained.history.loss[-1], 4), total_steps=total_steps,
               projected_train_s=_r(total_steps * step_s, 1), projected_train_min=_r(total_steps * step_s / 60, 2),
               peak_gib=peak_gib(ctx.device), precision="fp32 (as the chapter)", shrunk=ctx.size != "full",
               flops_per_step_counted=fc.get_total_flops())
    for name in ("fp32", "bf16"):
        if ctx.cache.get(f"{name}_flops"):
            fig[f"mfu_{name}"] = _r(fig["flops_per_step_counted"] / step_s / ctx.cache[f"{name}_flops"], 4)
    fig["summary"] = (f"{fig['step_ms']:.0f} ms/step ({100 * fig['data_share']:.0f}% batch generation), "
                      f"{fig['projected_train_min']:.1f} min projected"
                      + (f", MFU vs fp32 {100 * fig['mfu_fp32']:.0f}%" if "mfu_fp32" in fig else ""))


# --- the command line: torchrun and a chapter ---------------------------------------------------------

def _cli(ctx: Context, fig: dict, folder: str, args: list[str], budget: float, launcher=()) -> dict:
    """``reasoning-lab ARGS --out OUT/folder`` (the installed command's module form); its metrics."""
    out = ctx.out / folder
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, *launcher, "-m", "reasoning_lab.experiments.cli", *args, "-p",
           f"device={ctx.device.type}", "--out", str(out)]
    fig["command"] = " ".join(cmd[1:])
    t0 = time.perf_counter()
    proc = _run(cmd, budget)
    fig.update(seconds_wall=_r(time.perf_counter() - t0, 1), returncode=proc.returncode)
    if proc.returncode != 0:
        fig["output_tail"] = " | ".join(l.strip() for l in (proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise RuntimeError(f"{args[0]} {args[1]} exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads((out / "metrics.json").read_text())


def check_torchrun(ctx: Context, fig: dict, budget: float = 45.0) -> None:
    over = [x for k, v in ctx.s["torchrun"].items() for x in ("-p", f"{k}={v}")]
    m = fig["metrics"] = _cli(ctx, fig, "torchrun", ["train", "capacity", "--preset", "paper", *over], budget,
                              launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"))
    fig["checkpoint_written"] = any((ctx.out / "torchrun" / "checkpoints").glob("*.pt"))
    fig["ddp"] = bool(m.get("distributed"))
    fig["summary"] = (f"world {m.get('world_size')}, {m.get('bits_per_param', float('nan')):.3g} bits/param, "
                      f"{fig['seconds_wall']:.0f} s with start-up" + ("" if fig["ddp"] else "; DDP not engaged"))
    if not fig["checkpoint_written"]:
        raise Failed("torchrun run finished without its checkpoint")


def check_notebook(ctx: Context, fig: dict, budget: float = 90.0) -> None:
    missing = [m for m in ("papermill", "jupytext", "ipykernel", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise Skipped(f"{', '.join(missing)} not installed (papermill needs them to run a chapter)")
    if not ctx.s["notebook"]:
        raise Skipped(f"not run at size {ctx.size}")
    m = _cli(ctx, fig, "notebook", ["run", "reversal-curse"], budget)
    fig["metrics"] = {k: v for k, v in m.items() if isinstance(v, (int, float, str))}
    fig["claims_hold"] = bool(m["train_prob"] >= 0.99 and m["valid_prob"] <= m["chance_prob"])
    fig["summary"] = (f"reversal-curse in {fig['seconds_wall']:.0f} s: train_prob {m['train_prob']:.3f}, "
                      f"valid_prob {m['valid_prob']:.2g} (chance {m['chance_prob']:.2g})")
    if not fig["claims_hold"]:
        raise Failed("the chapter's claims do not hold: " + fig["summary"])


# ---------------------------------------------------------------------------------------------------
# Driver

def main(argv: list[str] | None = None) -> int:
    names = [c[0] for c in CHECKS]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check", help="folder for gpu-check.json")
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
    if total_budget <= 0 or args.budget_scale <= 0:
        raise SystemExit(f"gpu_check: --budget={total_budget} / --budget-scale={args.budget_scale} is not allowed: "
                         "expected positive numbers")
    out = args.out.resolve()
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": device.type, "size": size,
            "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "argv": sys.argv[1:] if argv is None else list(argv), "budget_s": total_budget,
            "json": str(out / "gpu-check.json"),
            "tolerances": {"early_epochs": TOL_EPOCHS, **TOL, "cudagraphs-vs-compiled": TOL_GRAPHS_VS_COMPILED}}
    report = {"meta": meta, "checks": {}}
    ctx = Context(device, size, out, report, SIZES)
    if device.type == "cpu":        # small models on a CPU: one thread is as fast, and immune to busy cores
        torch.set_num_threads(max(1, int(os.environ.get("REASONING_LAB_THREADS", "1") or 1)))
    print(f"gpu_check: {meta['gpu'] or 'CPU mode'}, size {size}, budget {total_budget:.0f} s -> {meta['json']}",
          flush=True)
    run_checks(ctx, CHECKS, globals(), args.only, args.skip, total_budget, args.budget_scale,
               budget_kw=("torchrun", "notebook"))
    print_table(report)
    return 1 if any(e.get("status") in ("FAIL", "ERROR") for e in report["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
