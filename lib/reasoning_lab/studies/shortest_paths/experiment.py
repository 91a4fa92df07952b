"""Experiments of the shortest-path study: the hand-built BFS transformer and the trained one."""
from __future__ import annotations

from ...experiments.params import Bool, Float, Int
from ...experiments.registry import Claim, Experiment, heads_divide, register


_POS_LR = Float(0.0, 10.0, open_lo=True)

register(Experiment(
    "bfs-handcrafted", "A transformer built by hand to run BFS",
    rules={"max_vertices": Int(2, 15), "test_graphs": Int(1, 1_000_000), "perturb_vertices": Int(2, 15),
           "perturb_seeds": Int(1, 100), "perturb_steps": Int(0, 1_000_000), "perturb_batch": Int(1, 1 << 20),
           "perturb_lr": _POS_LR, "threads": Int(0, 1024)},
    presets={"paper": {"max_vertices": 15, "test_graphs": 4096, "perturb_vertices": 8, "perturb_seeds": 6,
                       "perturb_steps": 5000, "perturb_batch": 512, "perturb_lr": 1e-6, "threads": 0}},
    metrics=("mse", "max_abs_error", "perturbed_loss", "recovered_loss"),
    claims=(Claim("mse <= 1e-9"),),
))


def _path_sizes(p: dict) -> None:
    if p.get("embed_dim", 0) % 2:
        raise ValueError(f"parameter embed_dim={p['embed_dim']} is not allowed: expected an even number "
                         "(two vertex embeddings of embed_dim/2 per edge token)")
    if "max_vertices" in p and "max_tune_vertices" in p and p["max_tune_vertices"] > p["max_vertices"]:
        raise ValueError(f"parameter max_tune_vertices={p['max_tune_vertices']} is not allowed: expected at "
                         f"most max_vertices={p['max_vertices']}")


register(Experiment(
    "shortest-paths", "Learning shortest paths, and generalising off-distribution",
    rules={"max_vertices": Int(3, 15), "max_tune_vertices": Int(3, 15), "n_layers": Int(1, 64),
           "n_heads": Int(1, 64), "embed_dim": Int(2, 4096), "ff_dim": Int(1, 16384), "norm_first": Bool(),
           "batch_size": Int(1, 1 << 20), "lr": _POS_LR, "lr_final": _POS_LR, "warmup_steps": Int(0, 10**7),
           "pretrain_steps": Int(1, 10**7), "switch_step": Int(0, 10**7), "finetune_steps": Int(0, 10**7),
           "finetune_batch": Int(1, 1 << 20), "finetune_lr": _POS_LR, "finetune_weight_decay": Float(0.0, 10.0),
           "eval_batch": Int(16, 1 << 20), "threads": Int(0, 1024), "grad_clip": Float(0.0, 1e6)},
    presets={"cpu-full": {"max_vertices": 15, "max_tune_vertices": 7, "n_layers": 6, "batch_size": 256,
                          "pretrain_steps": 2000, "switch_step": 1400, "finetune_steps": 100,
                          "finetune_batch": 256, "eval_batch": 4096, "threads": 1},
             "paper": {"max_vertices": 15, "max_tune_vertices": 7, "n_layers": 11, "n_heads": 2, "embed_dim": 64,
                       "ff_dim": 256, "norm_first": False, "batch_size": 32768, "lr": 5e-4, "lr_final": 1e-4,
                       "warmup_steps": 0, "pretrain_steps": 9600, "switch_step": 6400, "finetune_steps": 100,
                       "finetune_batch": 32768, "finetune_lr": 1e-5, "finetune_weight_decay": 1e-5,
                       "eval_batch": 32768, "threads": 0, "grad_clip": 0.0},
             "paper-6layer": {"max_vertices": 15, "max_tune_vertices": 7, "n_layers": 6, "n_heads": 2,
                              "embed_dim": 64, "ff_dim": 256, "norm_first": False, "batch_size": 32768, "lr": 1e-3,
                              "lr_final": 1e-3, "warmup_steps": 0, "pretrain_steps": 3200, "switch_step": 3200,
                              "finetune_steps": 100, "finetune_batch": 32768, "finetune_lr": 1e-5,
                              "finetune_weight_decay": 1e-5, "eval_batch": 32768, "threads": 0,
                              "grad_clip": 0.0}},
    checks=(heads_divide, _path_sizes),
    metrics=("pretrain_loss", "finetune_loss", "test_loss_onpath_small_target", "test_loss_onpath",
             "test_loss_any_small_graphs", "test_loss_any_small_target", "test_loss_any_large", "label_variance"),
    claims=(Claim("pretrain_loss * 10 <= label_variance"),),   # well under the label variance
))
