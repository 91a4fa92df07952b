"""The training run of each shortest-path experiment, defined once; every entrance (the chapters,
``reasoning-lab run``/``train``/``sweep``, the GPU check) trains through these functions
(``Experiment.train``). Arguments and result as in :mod:`reasoning_lab.studies.reversal.runs`."""
from __future__ import annotations

import copy

import torch

from ...train import Trained, no_checkpoints
from . import handcrafted as hc
from . import model as spm
from . import robustness as rob
from .data import SPLIT_NAMES, TEST_SPLITS, make_batch
from .figures import FrameRecorder, target_metrics, test_metrics


def eval_data(p: dict) -> dict:
    """The fixed evaluation graphs of every split (``p["eval_batch"]`` each, their own generator)."""
    gen = torch.Generator().manual_seed(p["seed"] + 10_000)
    sizes = {"max_vertices": p["max_vertices"], "max_tune_vertices": p["max_tune_vertices"]}
    return {s: make_batch(s, p["eval_batch"], gen, **sizes) for s in SPLIT_NAMES}


def paths(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``shortest-paths``: pre-training on fresh graphs (Adam, the original's step schedule, the read-out
    bias started at the mean label, frames of the outputs on fixed graphs for the player), then the two
    fine-tunings on on-path targets: as described (a fresh Adam with weight decay) and as the original
    code ran it (the pre-training optimizer continued at its final rate); both evaluated on every test
    set. ``models``: [as run, as described]; ``histories``: [pre-training, fine-tune as described,
    fine-tune as run]; ``extra``: the evaluations, the frame recorder and the schedule's final rate."""
    sizes = {"max_vertices": p["max_vertices"], "max_tune_vertices": p["max_tune_vertices"]}
    data = eval_data(p)
    labels = data["pretrain"][2].float()
    gen = torch.Generator().manual_seed(p["seed"])
    torch.manual_seed(p["seed"])
    model = spm.PathTransformer(p["max_vertices"], p["embed_dim"], p["n_heads"], p["n_layers"], p["ff_dim"],
                                norm_first=p["norm_first"])
    with torch.no_grad():
        model.head.bias.fill_(float(labels.mean()))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
    schedule = spm.step_schedule(p["lr"], p["lr_final"], p["warmup_steps"], p["switch_step"])
    steps = p["pretrain_steps"]
    watch = tuple(t[:1024] for t in data["pretrain"])    # fixed graphs, scored in training
    frames = FrameRecorder(watch, max(1, steps // 24), steps - 1, device)
    log = spm.train_steps(model, opt, "pretrain", steps, p["batch_size"], gen, schedule=schedule, data_kw=sizes,
                          device=device, grad_clip=p["grad_clip"], on_step=frames, hooks=hooks,
                          checkpoint=checkpoint("pretrain"), checkpoint_every=max(1, steps // 10),
                          state={"frames": frames}, **loop)
    pre = spm.evaluate(model, {s: data[s] for s in ("pretrain", "finetune")}, device)
    described = copy.deepcopy(model)
    opt_described = torch.optim.Adam(described.parameters(), lr=p["finetune_lr"],
                                     weight_decay=p["finetune_weight_decay"])
    log_described = spm.train_steps(described, opt_described, "finetune", p["finetune_steps"], p["finetune_batch"],
                                    gen, data_kw=sizes, device=device, hooks=hooks,
                                    checkpoint=checkpoint("finetune-described"), **loop)
    final_lr = schedule(steps - 1)
    log_as_run = spm.train_steps(model, opt, "finetune", p["finetune_steps"], p["finetune_batch"], gen,
                                 schedule=lambda s: final_lr, data_kw=sizes, device=device, hooks=hooks,
                                 checkpoint=checkpoint("finetune-as-run"), **loop)
    tests = {s: data[s] for s in ("finetune", *TEST_SPLITS)}
    res_described = spm.evaluate(described, tests, device)
    res_as_run = spm.evaluate(model, tests, device)
    label_variance = float(labels.var())
    metrics = {"pretrain_loss": pre["pretrain"]["mse"], "label_variance": label_variance,
               "finetune_loss_before": pre["finetune"]["mse"], "finetune_loss": res_as_run["finetune"]["mse"],
               "finetune_loss_as_described": res_described["finetune"]["mse"],
               **test_metrics(res_as_run, res_described, data, TEST_SPLITS),
               **target_metrics(res_as_run, data), **target_metrics(res_described, data, "_as_described"),
               "params": model.num_params()}
    return Trained([model, described], [log, log_described, log_as_run], metrics, data=data, frames=frames.frames,
                   extra={"pre": pre, "as_run": res_as_run, "described": res_described, "recorder": frames,
                          "final_lr": final_lr, "label_variance": label_variance})


def bfs(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``bfs-handcrafted``: the hand-built model checked on ``p["test_graphs"]`` random graphs of up to
    ``p["max_vertices"]`` vertices (its own generator), then the destroy-and-retrain runs
    (:func:`.robustness.run_ours`; seed ``p["seed"] + i`` hits matrix kind ``i``). ``extra``: the check
    and the retraining runs."""
    model = hc.HandcraftedBFS(p["max_vertices"])
    gen = torch.Generator().manual_seed(p["seed"] + 20_000)
    edges, labels = hc.random_graphs(p["test_graphs"], p["max_vertices"], gen)
    check = hc.exactness(model, edges, labels)
    studies = rob.run_ours(p["perturb_vertices"], p["perturb_seeds"], p["perturb_steps"], p["perturb_batch"],
                           p["perturb_lr"], seed=p["seed"])
    metrics = {"mse": check["mse"], "max_abs_error": check["max_abs_error"], **rob.recovery_metrics(studies),
               "test_graphs": p["test_graphs"]}
    return Trained([model], [], metrics, data=(edges, labels), extra={"check": check, "studies": studies})
