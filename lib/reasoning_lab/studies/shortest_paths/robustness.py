"""Destroy-and-retrain runs of the hand-built BFS model in two settings, and a squash-slope sweep.

``ours`` is the notebook's quick default (scaled constants, Adam at 1e-3 for 50 steps); ``original``
is the post's setting (the appendix constants, Adam at 1e-6 for 5,000 steps of 512 graphs, n = 8;
the saved run took 44 minutes in one process, most of it these two seeds). Both destroy the
same matrices (seed ``s`` hits kind ``STUDY_ORDER[s]``), so the two rows of a seed differ only in
the constants and the optimiser settings. The original setting is too slow for the notebook's
default run; ``python -m reasoning_lab.studies.shortest_paths.robustness OUT`` saves it as
``OUT/params.json`` and ``OUT/metrics.json``.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from ...io import write_json
from .handcrafted import STUDY_ORDER, HandcraftedBFS, exactness, perturb_and_retrain, random_graphs, \
    scaled_constants

SETTINGS = {
    "ours": {"constants": "scaled", "lr": 1e-3, "steps": 50, "batch_size": 64},
    "original": {"constants": "appendix", "lr": 1e-6, "steps": 5000, "batch_size": 512},
}
SQUASH_EPS = (1e-2, 1e-6, 1e-12)


def final_loss(losses: list[float], tail: int = 100) -> float:
    """Mean of the last ``tail`` training losses (at most a tenth of the run; the last one if short)."""
    k = max(1, min(tail, len(losses) // 10))
    return float(np.mean(losses[-k:]))


def retrain(setting: dict, seeds, max_vertices: int = 8) -> list[dict]:
    """One destroy-and-retrain run per seed; per run: kind, index, first and final loss, a thinned
    loss curve (at most 200 points)."""
    rows = []
    for s in seeds:
        st = perturb_and_retrain(max_vertices, s, setting["steps"], setting["batch_size"], setting["lr"],
                                 kind=STUDY_ORDER[s % len(STUDY_ORDER)], constants=setting["constants"])
        every = max(1, len(st["losses"]) // 200)
        rows.append({"seed": s, "kind": st["kind"], "index": st["index"], "perturbed": st["losses"][0],
                     "recovered": final_loss(st["losses"]), "curve_every": every,
                     "curve": st["losses"][::every]})
    return rows


def squash_sweep(eps_values=SQUASH_EPS, seeds=(0, 1), max_vertices: int = 8, graphs: int = 256,
                 setting: dict | None = None) -> list[dict]:
    """Exactness and destroy-and-retrain losses of the scaled construction at several squash slopes
    ``s = 4 n ln(1/eps)`` (steeper for smaller ``eps``), in the ``ours`` optimiser setting."""
    setting = setting or SETTINGS["ours"]
    gen = torch.Generator().manual_seed(1234)
    edges, labels = random_graphs(graphs, max_vertices, gen)
    out = []
    for eps in eps_values:
        c = scaled_constants(max_vertices, eps=eps)
        exact = exactness(HandcraftedBFS(max_vertices, constants=c), edges, labels)
        runs = retrain({**setting, "constants": c}, seeds, max_vertices)
        out.append({"eps": eps, "slope": c["s"], "mse": exact["mse"],
                    "perturbed": float(np.mean([r["perturbed"] for r in runs])),
                    "recovered": float(np.mean([r["recovered"] for r in runs])), "runs": runs})
    return out


def _job(what: str, seeds, setting: dict | None = None) -> list[dict]:
    torch.set_num_threads(1)
    if what == "squash":
        return squash_sweep(seeds=seeds)
    return retrain(setting or SETTINGS[what], seeds)


def main(out_dir: str, seeds=(0, 1), squash_seeds=(0, 1), workers: int = 3,
         original_steps: int | None = None) -> None:
    """Run both settings and the sweep (the original setting one seed per process) and save them;
    ``original_steps`` shortens the original setting (recorded in ``params.json``)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    settings = {**SETTINGS, "original": {**SETTINGS["original"],
                                         "steps": original_steps or SETTINGS["original"]["steps"]}}
    params = {"settings": settings, "seeds": list(seeds), "max_vertices": 8,
              "squash_eps": list(SQUASH_EPS), "squash_seeds": list(squash_seeds)}
    write_json(out / "params.json", params)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        original = [pool.submit(_job, "original", [s], settings["original"]) for s in seeds]
        ours = pool.submit(_job, "ours", list(seeds))
        squash = pool.submit(_job, "squash", list(squash_seeds))
        metrics = {"ours": ours.result(), "original": [r for f in original for r in f.result()],
                   "squash": squash.result()}
    metrics["wall_seconds"] = round(time.time() - t0, 1)
    metrics["finished"] = time.strftime("%Y-%m-%d %H:%M")
    write_json(out / "metrics.json", metrics)


if __name__ == "__main__":
    main(sys.argv[1], original_steps=int(sys.argv[2]) if len(sys.argv) > 2 else None)


def run_ours(n: int, seeds: int, steps: int, batch_size: int, lr: float, seed: int = 0) -> list[dict]:
    """The notebook's default destroy-and-retrain runs (seed ``seed + i`` hits kind ``i``)."""
    return [perturb_and_retrain(n, seed + i, steps, batch_size, lr,
                                kind=STUDY_ORDER[i % len(STUDY_ORDER)]) for i in range(seeds)]


def recovery_figure(studies: list[dict], n: int, lr: float):
    """Training MSE after destroying one matrix, one curve per run (log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    for st in studies:
        ax.plot(st["losses"], label=f"seed {st['seed']}: {st['kind']}[{st['index']}]")
    ax.set_yscale("log")
    ax.set(xlabel="Adam step", ylabel="training MSE (log scale)",
           title=f"Recovery after destroying one matrix (N = {n}, lr = {lr})")
    ax.legend(fontsize=8)
    return fig


def recovery_metrics(studies: list[dict]) -> dict[str, float]:
    """Mean first and last loss over all runs and per family (reach / read-out)."""
    first = lambda runs: float(np.mean([st["losses"][0] for st in runs]))
    last = lambda runs: float(np.mean([st["losses"][-1] for st in runs]))
    out = {"perturbed_loss": first(studies), "recovered_loss": last(studies)}
    for family in ("reach", "read"):
        runs = [st for st in studies if st["kind"].startswith(family + "_")]
        if runs:
            out[f"perturbed_loss_{family}"], out[f"recovered_loss_{family}"] = first(runs), last(runs)
    return out


def saved(folder) -> dict:
    """The saved comparison: params, metrics, text tables and the numbers the prose quotes."""
    import json
    from pathlib import Path

    folder = Path(folder)
    params = json.loads((folder / "params.json").read_text())
    m = json.loads((folder / "metrics.json").read_text())
    lines = [f"{'seed':>4} {'matrix':>10} | {'ours: first':>11} {'last':>9} | "
             f"{'original: first':>15} {'last':>9}"]
    for a, b in zip(m["ours"], m["original"]):
        matrix = f"{a['kind']}[{a['index']}]"
        lines.append(f"{a['seed']:>4} {matrix:>10} | {a['perturbed']:11.3g} "
                     f"{a['recovered']:9.3g} | {b['perturbed']:15.3g} {b['recovered']:9.3g}")
    squash = [f"{'eps':>8} {'slope s':>8} {'exact MSE':>10} {'destroyed':>10} {'retrained':>10}"]
    squash += [f"{r['eps']:8.0e} {r['slope']:8.0f} {r['mse']:10.2e} {r['perturbed']:10.3g} "
               f"{r['recovered']:10.3g}" for r in m["squash"]]
    glue = {}
    for name in ("ours", "original"):
        for r in m[name]:
            glue[f"{name}_{r['kind']}_first"] = r["perturbed"]
            glue[f"{name}_{r['kind']}_last"] = r["recovered"]
            glue[f"{name}_{r['kind']}_drop"] = 1 - r["recovered"] / r["perturbed"]
    sq = m["squash"]
    glue.update(squash_slopes=", ".join(f"{r['slope']:.0f}" for r in sq),
                squash_mse=", ".join(f"{r['mse']:.1e}" for r in sq),
                squash_destroyed=", ".join(f"{r['perturbed']:.2g}" for r in sq),
                squash_retrained=", ".join(f"{r['recovered']:.2g}" for r in sq),
                original_steps=params["settings"]["original"]["steps"],
                original_batch=params["settings"]["original"]["batch_size"],
                saved_minutes=m["wall_seconds"] / 60)
    return {"params": params, "metrics": m, "table": "\n".join(lines),
            "squash": "\n".join(squash), "glue": glue}


def saved_figure(saved: dict):
    """The saved runs' training losses after destroying a matrix: ours (left) and the original's
    setting (right), one curve per seed, by Adam step (log scale)."""
    import matplotlib.pyplot as plt

    settings = saved["params"]["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, name in zip(axes, ("ours", "original")):
        s = settings[name]
        for r in saved["metrics"][name]:
            steps = np.arange(len(r["curve"])) * r["curve_every"]
            ax.plot(steps, r["curve"], label=f"seed {r['seed']}: {r['kind']}[{r['index']}]")
        ax.set_yscale("log")
        ax.set(xlabel="Adam step", ylabel="training MSE (log scale)",
               title=f"{name}: {s['constants']} constants, lr {s['lr']:g}, batch {s['batch_size']}")
        ax.legend(fontsize=9)
    return fig


def runs_text(studies: list[dict]) -> str:
    return "\n".join(f"seed {st['seed']}: destroyed {st['kind']}[{st['index']}]: MSE "
                     f"{st['losses'][0]:.3g} -> {st['losses'][-1]:.3g}" for st in studies)
