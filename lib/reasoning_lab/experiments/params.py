"""Parameter rules: every experiment parameter is checked before any work starts.

A rule turns a raw value (from a notebook cell, papermill, or the command line) into a clean one,
or raises a one-line ``ValueError`` that names the parameter, the value and what is allowed.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence


def as_dict(p, **overrides) -> dict[str, Any]:
    """A notebook's parameters (a namespace such as ``run.p``, or a dict) as a new dict, with overrides."""
    return {**(vars(p) if isinstance(p, SimpleNamespace) else dict(p)), **overrides}


def did_you_mean(name: str, options) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options`` to a misspelled ``name`` (else "")."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"parameter {name}={value!r} is not allowed: expected {allowed}")


def _range_text(kind: str, lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return kind


def parse_text(text: str) -> Any:
    """Interpret a command-line string: Python literal if it parses, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        return text


class Rule:
    def __call__(self, name: str, value: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Rule):
    lo: int | None = None
    hi: int | None = None

    def __call__(self, name, value):
        if isinstance(value, str):
            value = parse_text(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, value, self.describe())
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise _bad(name, value, self.describe())
        return value

    def describe(self):
        return _range_text("an integer", self.lo, self.hi)


@dataclass(frozen=True)
class Float(Rule):
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False  # lo itself is excluded

    def __call__(self, name, value):
        if isinstance(value, str):
            value = parse_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(name, value, self.describe())
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise _bad(name, value, self.describe())
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            raise _bad(name, value, self.describe())
        if self.hi is not None and value > self.hi:
            raise _bad(name, value, self.describe())
        return value

    def describe(self):
        if self.open_lo and self.lo is not None:
            hi = f" and <= {self.hi}" if self.hi is not None else ""
            return f"a number > {self.lo}{hi}"
        return _range_text("a number", self.lo, self.hi)


@dataclass(frozen=True)
class Bool(Rule):
    def __call__(self, name, value):
        if isinstance(value, str):
            value = parse_text(value)
        if value in (0, 1) and not isinstance(value, float):
            value = bool(value)
        if not isinstance(value, bool):
            raise _bad(name, value, self.describe())
        return value

    def describe(self):
        return "True or False"


class Choice(Rule):
    def __init__(self, *options: str):
        self.options = tuple(options)

    def __call__(self, name, value):
        if value not in self.options:
            raise ValueError(f"parameter {name}={value!r} is not allowed: expected {self.describe()}"
                             + did_you_mean(value, self.options))
        return value

    def describe(self):
        return "one of " + ", ".join(repr(o) for o in self.options)


class CompileMode(Rule):
    """``compile``: True/False, or a ``torch.compile`` mode ("reduce-overhead" also captures CUDA graphs)."""
    MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

    def __call__(self, name, value):
        if isinstance(value, str) and value in self.MODES:
            return value
        try:
            return Bool()(name, value)
        except ValueError:
            raise _bad(name, value, self.describe()) from None

    def describe(self):
        return "True, False or a torch.compile mode (" + ", ".join(repr(m) for m in self.MODES) + ")"


@dataclass(frozen=True)
class Text(Rule):
    """Any string (paths, labels)."""

    def __call__(self, name, value):
        if not isinstance(value, str):
            raise _bad(name, value, self.describe())
        return value

    def describe(self):
        return "a string"


@dataclass(frozen=True)
class Seq(Rule):
    """A list/tuple whose items all pass ``item``; optional exact or minimum length."""

    item: Rule
    length: int | None = None
    min_length: int = 1

    def __call__(self, name, value):
        if isinstance(value, str):
            value = parse_text(value)
            if isinstance(value, str):  # a list as typed in a shell: a,b or [a,b] with unquoted words
                text = value.strip()
                if text.startswith(("[", "(")) and text.endswith(("]", ")")):
                    text = text[1:-1]
                value = [parse_text(v.strip()) for v in text.split(",") if v.strip()]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.length in (None, 1):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise _bad(name, value, self.describe())
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            raise _bad(name, value, self.describe())
        try:
            out = [self.item(name, v) for v in value]
        except ValueError as err:
            hint = "; did you mean" + str(err).split("; did you mean", 1)[1] if "; did you mean" in str(err) else ""
            raise ValueError(f"parameter {name}={list(value)!r} is not allowed: expected {self.describe()}"
                             + hint) from None
        return out

    def describe(self):
        n = f"{self.length} " if self.length is not None else ""
        return f"a list of {n}items, each {self.item.describe()}"


SEED = Int(0, 2**31 - 1)
DEVICE = Choice("auto", "cpu", "cuda", "mps")
OUTPUT_DIR = Text()
COMMON = {"seed": SEED, "device": DEVICE, "output_dir": OUTPUT_DIR}


def validate(experiment: str, rules: dict[str, Rule], values: dict[str, Any],
             checks: Sequence = ()) -> dict[str, Any]:
    """Check every value against its rule; then the cross-parameter ``checks`` (callables on the dict)."""
    unknown = sorted(set(values) - set(rules))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for {experiment}{did_you_mean(unknown[0], rules)} "
                         "(valid parameters: " + ", ".join(sorted(rules)) + ")")
    out = {k: rules[k](k, v) for k, v in values.items()}
    for check in checks:
        check(out)
    return out


# ---------------------------------------------------------------------------------------------------
# Rules shared by several studies: the chapters' transformer and its AdamW


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
