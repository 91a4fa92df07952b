"""The experiment registry: each experiment is one notebook plus the rules for its parameters and presets.

Defaults live in exactly one place, the notebook's ``parameters`` cell (papermill overrides it). The
library holds what a notebook cannot: which values are allowed, and the named presets.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .params import COMMON, Bool, Choice, CompileMode, Float, Int, Rule, Seq, validate

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


@dataclass
class Experiment:
    name: str
    title: str
    rules: dict[str, Rule]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: tuple[Callable[[dict], None], ...] = ()
    metrics: tuple[str, ...] = ()

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / f"{self.name}.md"

    def defaults(self) -> dict[str, Any]:
        return notebook_parameters(self.notebook)

    def resolve(self, preset: str = "default", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults, then the preset, then the overrides; all validated. Raises a one-line ValueError."""
        if preset not in self.presets and preset != "default":
            raise ValueError(f"unknown preset {preset!r} for {self.name}; valid presets: "
                             + ", ".join(["default", *sorted(p for p in self.presets if p != 'default')]))
        values = dict(self.defaults())
        values.update(self.presets.get(preset, {}))
        values.update(overrides or {})
        return validate(self.name, self.rules, values, self.checks)


_PARAM_CELL = re.compile(r"```\{code-cell\}[^\n]*\n(?::tags:\s*\[([^\]]*)\]\n|---\n(.*?)\n---\n)(.*?)```", re.S)


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Literal assignments of the cell tagged ``parameters`` in a MyST notebook."""
    text = Path(path).read_text()
    for m in _PARAM_CELL.finditer(text):
        tags = m.group(1) or m.group(2) or ""
        if "parameters" not in tags:
            continue
        values = {}
        for node in ast.parse(m.group(3)).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                values[node.targets[0].id] = ast.literal_eval(node.value)
        return values
    raise ValueError(f"{path.name} has no cell tagged 'parameters'")


REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    exp.rules = {**COMMON, **exp.rules}
    REGISTRY[exp.name] = exp
    return exp


def get(name: str) -> Experiment:
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: " + ", ".join(sorted(REGISTRY)))
    return REGISTRY[name]


def available() -> list[Experiment]:
    """Registered experiments whose notebook exists, in registration order."""
    return [e for e in REGISTRY.values() if e.notebook.exists()]


# ---------------------------------------------------------------------------------------------------
# Shared rule sets
POS = Choice("none", "absolute", "rotary")
BETAS = Seq(Float(0.0, 1.0), length=2)
POS_INT, NONNEG_INT = Int(1), Int(0)
LR = Float(0.0, 10.0, open_lo=True)
WD = Float(0.0, 100.0)

TRANSFORMER_RULES: dict[str, Rule] = {
    "pos_encoding": POS, "n_layers": Int(1, 96), "n_heads": Int(1, 64), "embed_dim": Int(2, 8192),
    "dropout": Float(0.0, 0.9), "tie_embeddings": Bool(), "freeze_embeddings": Bool(),
    "epochs": POS_INT, "batch_size": POS_INT, "lr": LR, "weight_decay": WD, "betas": BETAS,
    "loss_whole_sequence": Bool(), "seeds": Int(1, 100), "compile": CompileMode(),
}


def _heads_divide(p: dict) -> None:
    if "embed_dim" in p and "n_heads" in p and p["embed_dim"] % p["n_heads"]:
        raise ValueError(f"parameter embed_dim={p['embed_dim']} is not allowed: expected a multiple of "
                         f"n_heads={p['n_heads']}")


REVERSAL_PAPER = {"n_layers": 24, "n_heads": 12, "embed_dim": 768, "vocab_size": 800, "epochs": 3000,
                  "batch_size": 64, "lr": 0.01, "weight_decay": 0.01, "betas": [0.9, 0.999], "dropout": 0.1,
                  "seeds": 10, "tie_embeddings": False, "pos_encoding": "absolute", "device": "auto"}

def _position_table(seq_len: Callable[[dict], int]) -> Callable[[dict], None]:
    """``max_len`` (rows of the position table) is 0 (= the sentence length) or at least the sentence length."""
    def check(p: dict) -> None:
        n = seq_len(p)
        if p.get("max_len", 0) and p["max_len"] < n:
            raise ValueError(f"parameter max_len={p['max_len']} is not allowed: expected 0 or at least the "
                             f"sentence length {n}")
    return check


# The original's GPT-2 has a 1024-row position table whatever the sentence length: with it the paper preset
# has exactly the original's 172,128,768 parameters (tests/test_reversal.py).
REVERSAL_CURSE_PAPER = {**REVERSAL_PAPER, "max_len": 1024, "threads": 0}

register(Experiment(
    "reversal-curse", "The reversal curse",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "word_size": Int(1, 3), "max_len": Int(0, 100_000),
           "threads": Int(0, 1024)},
    presets={"paper": REVERSAL_CURSE_PAPER},
    checks=(_heads_divide, _position_table(lambda p: 2 * p.get("word_size", 1) + 1)),
    metrics=("train_prob", "valid_prob", "chance_prob"),
))


# --- Part II: chain of thought ---
def _chain_split(p: dict) -> None:
    from .tasks.chain import n_chain_triples, n_held_out

    n = n_chain_triples(p.get("vocab_size", 800), p.get("word_size", 1))
    k = n_held_out(n, p.get("held_out_fraction", 0.3))
    if not 1 <= k <= n - 1:
        raise ValueError(f"parameter held_out_fraction={p.get('held_out_fraction')} is not allowed: it holds out "
                         f"{k} of {n} triples; expected a fraction that holds out between 1 and {n - 1}")


def _related_split(p: dict) -> None:
    if p["id_pool"] + 3 > p["vocab_size"]:
        raise ValueError(f"parameter id_pool={p['id_pool']} is not allowed: expected at most vocab_size - 3 = "
                         f"{p['vocab_size'] - 3}")
    if p["n_train"] + p["n_valid"] > p["id_pool"]:
        raise ValueError(f"parameter n_train={p['n_train']} is not allowed: expected n_train + n_valid <= "
                         f"id_pool={p['id_pool']} (n_valid={p['n_valid']})")


register(Experiment(
    "chain-of-thought", "Chain of thought: A → B, B → C does not teach A ↝ C",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "word_size": Int(1, 3),
           "held_out_fraction": Float(0.0, 1.0, open_lo=True)},
    presets={"paper": {**REVERSAL_PAPER, "held_out_fraction": 0.3}},
    checks=(_heads_divide, _chain_split),
    metrics=("train_prob", "valid_prob", "valid_two_step_prob", "chance_prob"),
))

register(Experiment(
    "chain-related-tokens", "Chains of related entities: the answer's index token is in the context",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "id_pool": Int(2, 100_000),
           "n_train": Int(1, 100_000), "n_valid": Int(1, 100_000)},
    presets={"paper": {**REVERSAL_PAPER, "id_pool": 600, "n_train": 200, "n_valid": 50}},
    checks=(_heads_divide, _related_split),
    metrics=("train_prob", "valid_prob", "chance_prob"),
))


# --- Part I: theory of the reversal curse (bilinear model, one-layer transformer dynamics) ---
def _bilinear_vocab(p: dict) -> None:
    if p["vocab"] < 2 * p["n_pairs"]:
        raise ValueError(f"parameter vocab={p['vocab']} is not allowed: expected at least 2*n_pairs = {2 * p['n_pairs']}")


def _one_layer_sizes(p: dict) -> None:
    if p["n_heldout"] >= p["n_pairs"]:
        raise ValueError(f"parameter n_heldout={p['n_heldout']} is not allowed: expected fewer than "
                         f"n_pairs={p['n_pairs']}")
    if p["vocab"] < 3 * p["n_pairs"] + 2:
        raise ValueError(f"parameter vocab={p['vocab']} is not allowed: expected at least 3*n_pairs + 2 = "
                         f"{3 * p['n_pairs'] + 2} (the chain task's tokens)")


register(Experiment(
    "bilinear-dynamics", "Training dynamics of the bilinear model",
    rules={"dims": Seq(Int(2, 65536)), "n_pairs": Int(1, 2000), "vocab": Int(2, 20000),
           "lr": Float(0.0, 1000.0, open_lo=True), "steps": Int(1, 10_000_000), "seeds": Int(1, 1000),
           "rate_seeds": Int(2, 100_000)},
    presets={"paper": {"dims": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096], "lr": 1.0, "steps": 20000,
                       "seeds": 20, "rate_seeds": 1000}},
    checks=(_bilinear_vocab,),
    metrics=("train_loss_ratio", "reverse_loss_ratio", "epsilon"),
))

register(Experiment(
    "one-layer-dynamics", "One-layer transformer dynamics: asymmetric growth and intransitivity",
    rules={"n_pairs": Int(2, 5000), "n_heldout": Int(1, 5000), "vocab": Int(4, 20000),
           "lr_y": Float(0.0, 1000.0, open_lo=True), "lr_z": Float(0.0, 1000.0), "steps": Int(1, 10_000_000)},
    presets={"paper": {"n_pairs": 200, "n_heldout": 60, "vocab": 802, "lr_y": 2.0, "lr_z": 2.0, "steps": 20000}},
    checks=(_one_layer_sizes,),
    metrics=("forward_weight", "reverse_weight", "indirect_weight"),
))


# --- Part III: knowledge capacity ---
def _capacity_checks(p: dict) -> None:
    from .capacity.sizing import llama_config
    from .models import count_params

    if p["relations"] not in (4, 17):
        raise ValueError(f"parameter relations={p['relations']} is not allowed: expected 4 or 17")
    if "embed_dim" in p and p["embed_dim"] % 16:
        raise ValueError(f"parameter embed_dim={p['embed_dim']} is not allowed: expected a multiple of 16 "
                         "(the head size)")
    names = p["n_first_names"] ** 2 * p["n_last_names"]
    if names < 2 * p["n_profiles"]:
        raise ValueError(f"parameter n_profiles={p['n_profiles']} is not allowed: expected at most half the "
                         f"{names:,} possible names (n_first_names² · n_last_names)")
    vocab = (1 + 4 + p["relations"] + p["n_first_names"] + p["n_last_names"] + p["n_years"] + 12 + 28
             + p["n_cities"] + p["n_universities"] + p["n_employers"])
    for key in ("budgets", "budget"):
        for budget in ([p[key]] if isinstance(p.get(key), int) else p.get(key, [])):
            smallest = count_params(llama_config(16, p["n_layers"], vocab))["total"]
            if budget < smallest:
                raise ValueError(f"parameter {key}={p[key]} is not allowed: every budget must be at least "
                                 f"{smallest:,} (the smallest {p['n_layers']}-layer model for this vocabulary)")


CAPACITY_DATA_RULES: dict[str, Rule] = {
    "n_profiles": Int(10, 10_000_000), "relations": Int(4, 17), "n_layers": Int(1, 96),
    "batch_size": POS_INT, "lr": LR, "weight_decay": WD, "two_hop": Bool(),
    "hop_ratio": Float(0.0, 1000.0, open_lo=True), "curriculum": Bool(),
    "n_first_names": Int(2, 28_125), "n_last_names": Int(1, 1_265_625), "n_cities": Int(1, 5625),
    "n_universities": Int(1, 5625), "n_employers": Int(1, 5625), "n_years": Int(1, 1000),
    "threads": Int(0, 1024),
}

register(Experiment(
    "capacity", "Knowledge capacity: bits per parameter",
    rules={**CAPACITY_DATA_RULES, "budgets": Seq(Int(1000, 10**11)), "exposures": Float(0.0, 1e7, open_lo=True),
           "workers": Int(1, 256),
           "name_scheme": Choice("optimal", "enumerate", "independent"),
           "two_hop_scheme": Choice("optimal", "big-hash", "2-hop-double")},
    presets={
        "cpu-full": {"n_profiles": 2000, "budgets": [30000, 70000], "n_layers": 2, "exposures": 1000,
                     "batch_size": 1024, "lr": 0.003, "weight_decay": 0.1, "threads": 1, "workers": 2},
        "paper": {"n_profiles": 10000, "relations": 4, "budgets": [500_000, 1_000_000, 2_000_000, 4_000_000,
                                                                   7_000_000, 10_000_000],
                  "n_layers": 4, "exposures": 1000, "batch_size": 1088, "lr": 0.001, "weight_decay": 0.1,
                  "n_first_names": 400, "n_last_names": 1000, "n_cities": 223, "n_universities": 100,
                  "n_employers": 73, "n_years": 200, "threads": 0, "device": "auto"},
    },
    checks=(_capacity_checks,),
    metrics=("params", "dataset_entropy_bits", "capacity_bits", "bits_per_param"),
))

register(Experiment(
    "capacity-probes", "Where is the bridge entity? Linear probes on 2-hop questions",
    rules={**CAPACITY_DATA_RULES, "embed_dim": Int(16, 8192), "exposures": Float(0.0, 1e7, open_lo=True),
           "probe_questions": Int(100, 1_000_000), "l2_grid": Seq(Float(0.0, 1e3)), "folds": Int(2, 20)},
    presets={"paper": {"n_profiles": 1000, "relations": 4, "n_layers": 8, "embed_dim": 256, "exposures": 2000,
                       "hop_ratio": 0.1, "probe_questions": 100_000, "threads": 0, "device": "auto"}},
    checks=(_capacity_checks,),
    metrics=("best_probe_layer", "best_probe_accuracy"),
))

# --- Part IV: shortest paths ---
_POS_LR = Float(0.0, 10.0, open_lo=True)

register(Experiment(
    "bfs-handcrafted", "A transformer built by hand to run BFS",
    rules={"max_vertices": Int(2, 15), "test_graphs": Int(1, 1_000_000), "perturb_vertices": Int(2, 15),
           "perturb_seeds": Int(1, 100), "perturb_steps": Int(0, 1_000_000), "perturb_batch": Int(1, 1 << 20),
           "perturb_lr": _POS_LR},
    presets={"paper": {"max_vertices": 15, "test_graphs": 4096, "perturb_vertices": 8, "perturb_seeds": 6,
                       "perturb_steps": 5000, "perturb_batch": 512, "perturb_lr": 1e-6}},
    metrics=("mse", "max_abs_error", "perturbed_loss", "recovered_loss"),
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
    presets={"paper": {"max_vertices": 15, "max_tune_vertices": 7, "n_layers": 11, "n_heads": 2, "embed_dim": 64,
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
    checks=(_heads_divide, _path_sizes),
    metrics=("pretrain_loss", "finetune_loss", "test_loss_onpath_small_target", "test_loss_onpath",
             "test_loss_any_small_graphs", "test_loss_any_small_target", "test_loss_any_large", "label_variance"),
))


# --- Part I: reversal with the fact in context, and what breaks the curse ---
def _icl_sizes(p: dict) -> None:
    if p["n_a"] + p["n_b"] > p["vocab_size"]:
        raise ValueError(f"parameter n_a={p['n_a']} is not allowed: expected n_a + n_b <= vocab_size = "
                         f"{p['vocab_size']} (n_b={p['n_b']})")
    if int(0.7 * p["n_b"]) < 1:
        raise ValueError(f"parameter n_b={p['n_b']} is not allowed: expected at least 2 (7 in 10 partners of "
                         "each A are trained, the rest held out)")


register(Experiment(
    "reversal-in-context", "Reversal in context: A → B ↔ B ← A",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "n_a": Int(1, 100_000), "n_b": Int(2, 100_000),
           "max_len": Int(0, 100_000), "threads": Int(0, 1024)},
    presets={"paper": {**REVERSAL_PAPER, "vocab_size": 400, "n_a": 100, "n_b": 10, "max_len": 1024, "threads": 0}},
    checks=(_heads_divide, _icl_sizes, _position_table(lambda p: 7)),
    metrics=("train_prob", "valid_prob", "chance_prob"),
))

def _fix_methods(p: dict) -> None:
    if "methods" in p and ("baseline" not in p["methods"] or len(set(p["methods"])) != len(p["methods"])):
        raise ValueError(f"parameter methods={p['methods']!r} is not allowed: expected distinct methods "
                         "including 'baseline' (every fix is compared with it)")


register(Experiment(
    "reversal-fixes", "What breaks the reversal curse",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "word_size": Int(1, 3), "max_len": Int(0, 100_000),
           "strong_weight_decay": WD, "masked_epochs": POS_INT, "masked_lr": LR, "threads": Int(0, 1024),
           "methods": Seq(Choice("baseline", "reversed_copies", "identity_bridge", "identity_neutral", "masked",
                                 "weight_decay", "tied"))},
    presets={"paper": {**REVERSAL_CURSE_PAPER, "seeds": 3, "masked_epochs": 3000, "masked_lr": 0.001}},
    checks=(_heads_divide, _position_table(lambda p: 2 * p.get("word_size", 1) + 1), _fix_methods),
    metrics=("valid_prob_baseline", "valid_prob_reversed_copies", "valid_prob_identity_bridge",
             "valid_prob_masked", "valid_prob_weight_decay", "valid_prob_tied", "chance_prob"),
))
