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

from .locations import notebook_dir
from .params import COMMON, Bool, Choice, CompileMode, Float, Int, Rule, Seq, validate

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = notebook_dir()   # the checkout's notebooks/, or the copy shipped in the package
# The studies whose experiment declarations the registry loads, in the book's order.
STUDIES = ("reversal", "chain", "theory", "capacity", "shortest_paths")


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


def load_studies() -> dict[str, Experiment]:
    """Import every study's ``experiment`` module (each registers its experiments); idempotent."""
    import importlib

    for study in STUDIES:
        importlib.import_module(f"reasoning_lab.studies.{study}.experiment")
    return REGISTRY


def get(name: str) -> Experiment:
    load_studies()
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: " + ", ".join(sorted(REGISTRY)))
    return REGISTRY[name]


def available() -> list[Experiment]:
    """Registered experiments whose notebook exists, in registration order."""
    return [e for e in load_studies().values() if e.notebook.exists()]


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


def heads_divide(p: dict) -> None:
    if "embed_dim" in p and "n_heads" in p and p["embed_dim"] % p["n_heads"]:
        raise ValueError(f"parameter embed_dim={p['embed_dim']} is not allowed: expected a multiple of "
                         f"n_heads={p['n_heads']}")


REVERSAL_PAPER = {"n_layers": 24, "n_heads": 12, "embed_dim": 768, "vocab_size": 800, "epochs": 3000,
                  "batch_size": 64, "lr": 0.01, "weight_decay": 0.01, "betas": [0.9, 0.999], "dropout": 0.1,
                  "seeds": 10, "tie_embeddings": False, "pos_encoding": "absolute", "device": "auto"}

