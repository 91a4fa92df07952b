"""The training run of each capacity experiment, defined once: profiles -> question bank -> models sized
from the budgets -> the loop configuration (:func:`loop_config`) -> the one loop
(:func:`.train.train_capacity`) -> checkpoints -> the metrics the run determines. The chapters,
``reasoning-lab run``/``train``/``sweep`` (``train`` under ``torchrun`` data-parallel), the GPU check
and the Slurm template all train through these functions (``Experiment.train``). Arguments and result
as in :mod:`reasoning_lab.studies.reversal.runs`."""
from __future__ import annotations

import torch

from ...model import Transformer
from ...train import LoopConfig, Trained, no_checkpoints
from . import report
from .questions import QuestionBank
from .sizing import config_for_budget, llama_config
from .sweep import model_row
from .train import BETAS, FINAL_LR, GRAD_CLIP, SCHEDULE, WARMUP_FRACTION, steps_for, train_capacity


def steps(p: dict, bank: QuestionBank) -> int:
    """The run's steps: every 1-hop fact seen ``p["exposures"]`` times on average."""
    return steps_for(p["exposures"], bank, p["batch_size"], p["two_hop"], p["hop_ratio"])


def loop_config(p: dict, bank: QuestionBank, device, checkpoint=None, evals: int = 8, **override) -> LoopConfig:
    """The loop settings of a capacity run: AdamW at ``p["lr"]`` with ``p["weight_decay"]`` and the
    chapter's betas, a linear warm-up of ``p["warmup_steps"]`` (0 or absent: 2% of the steps), then
    cosine decay (``schedule="cosine"``) or a constant rate (``"warmup"``, the original's); the steps
    from the exposures; ``evals`` evaluations; with a ``checkpoint`` path, a checkpoint every fifth of
    the run. ``override``: any :class:`LoopConfig` field."""
    n = steps(p, bank)
    loop = dict(steps=n, lr=p["lr"], weight_decay=p["weight_decay"], betas=tuple(p.get("betas", BETAS)),
                schedule=p.get("schedule", SCHEDULE), final_lr=FINAL_LR, grad_clip=GRAD_CLIP,
                warmup_steps=p.get("warmup_steps") or max(1, int(WARMUP_FRACTION * n)),
                eval_every=max(1, n // evals), device=device, checkpoint_path=checkpoint,
                checkpoint_every=max(1, n // 5) if checkpoint else 0)
    loop.update(override)
    return LoopConfig(**loop)


def _mix(p: dict) -> dict:
    return {"two_hop": p["two_hop"], "hop_ratio": p["hop_ratio"], "curriculum": p["curriculum"]}


def _train_one(bank, budget: int, p: dict, loop: LoopConfig, hooks=()) -> tuple[Transformer, object]:
    torch.manual_seed(p["seed"])
    model = Transformer(config_for_budget(budget, p["n_layers"], len(bank.profiles.vocab)))
    return model, train_capacity(model, bank, loop, p["batch_size"], p["seed"], **_mix(p), hooks=hooks)


def _train_job(bank, budget: int, p: dict, loop: LoopConfig) -> tuple[dict, object]:
    """One model in a worker process (one thread each: tiny models scale better over processes)."""
    torch.set_num_threads(max(1, p.get("threads") or 1))
    model, res = _train_one(bank, budget, p, loop)
    return model.state_dict(), res


def train_models(bank, p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> list[tuple[Transformer, object]]:
    """One model per budget of ``p["budgets"]``, in order (checkpoint ``model-<budget>`` each). With
    ``p["workers"] > 1`` on the CPU (and no hooks) the models train at the same time in that many
    processes, largest first; each model's result is the same as when trained alone."""
    budgets = p["budgets"]
    configs = {b: loop_config(p, bank, device, checkpoint(f"model-{b}"), **loop) for b in budgets}
    workers = p.get("workers", 1)
    if workers <= 1 or len(budgets) <= 1 or torch.device(device).type != "cpu" or hooks:
        return [_train_one(bank, b, p, configs[b], hooks) for b in budgets]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    order = sorted(range(len(budgets)), key=lambda i: -budgets[i])
    with ProcessPoolExecutor(max_workers=min(workers, len(budgets)), mp_context=mp.get_context("spawn")) as pool:
        jobs = {i: pool.submit(_train_job, bank, budgets[i], p, replace(configs[budgets[i]], progress=False))
                for i in order}
        out = []
        for i, b in enumerate(budgets):
            state, res = jobs[i].result()
            model = Transformer(config_for_budget(b, p["n_layers"], len(bank.profiles.vocab)))
            model.load_state_dict(state)
            out.append((model.eval(), res))
    return out


def capacity(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``capacity``: one model per parameter budget on the same profiles; each model's capacity under
    every counting scheme (``tables["models.csv"]``, also ``extra["rows"]``); the metrics of the model
    with the most bits per parameter, and of the largest."""
    st = report.build(p)
    trained = train_models(st.bank, p, device, checkpoint, hooks, **loop)
    rows = [model_row(m, res, st.bank, st.ents, p["name_scheme"], p["two_hop_scheme"]) for m, res in trained]
    best = max(rows, key=lambda r: r["bits_per_param"])
    metrics = {"params": best["params"], "dataset_entropy_bits": st.ent(p["name_scheme"]).one_hop,
               "capacity_bits": best["capacity_bits"], "bits_per_param": best["bits_per_param"],
               "exposures": best["exposures"], "n_models": len(rows),
               "capacity_bits_largest": rows[-1]["capacity_bits"], "params_largest": rows[-1]["params"]}
    return Trained([m for m, _ in trained], [res for _, res in trained], metrics, data=st,
                   tables={"models.csv": rows}, extra={"rows": rows})


def probes(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``capacity-probes``: one model of width ``p["embed_dim"]`` trained on 1-hop and 2-hop questions,
    then linear probes for the bridge entity at every layer and question position (and the model's own
    reading of it). ``extra``: the probe data, the probe result and the model's own losses."""
    from . import probes as pr

    st = report.build(p)
    cfg = loop_config(p, st.bank, device, checkpoint("model"), evals=6, **loop)
    torch.manual_seed(p["seed"])
    model = Transformer(llama_config(p["embed_dim"], p["n_layers"], len(st.vocab)))
    res = train_capacity(model, st.bank, cfg, p["batch_size"], p["seed"], **_mix(p), eval_questions=500,
                         hooks=hooks)
    data = pr.collect(model, st.bank, p["probe_questions"], seed=p["seed"])
    result = pr.run_probes(data, l2_grid=tuple(p["l2_grid"]), folds=p["folds"], seed=p["seed"])
    own = pr.model_first_token_loss(model, st.bank, data, pr.test_rows(data, seed=p["seed"]))
    return Trained([model], [res], pr.metrics(result, own, res.final), data=st,
                   extra={"probe_data": data, "probes": result, "own": own, "steps": cfg.steps})
