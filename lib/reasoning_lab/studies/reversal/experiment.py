"""Experiments of the reversal study: the curse, reversal with the fact in context, and what breaks the curse."""
from __future__ import annotations

from typing import Callable

from ...experiments.params import Choice, Float, Int, Seq
from ...experiments.registry import (LR, POS_INT, REVERSAL_PAPER, TRANSFORMER_RULES, WD, Claim, Experiment,
                                     heads_divide, register)


def _position_table(seq_len: Callable[[dict], int]) -> Callable[[dict], None]:
    """``max_len`` (rows of the position table) is 0 (= the sentence length) or at least the sentence length."""
    def check(p: dict) -> None:
        n = seq_len(p)
        if p.get("max_len", 0) and p["max_len"] < n:
            raise ValueError(f"parameter max_len={p['max_len']} is not allowed: expected 0 or at least the "
                             f"sentence length {n}")
    return check


REVERSAL_CURSE_PAPER = {**REVERSAL_PAPER, "max_len": 1024, "threads": 0}

register(Experiment(
    "reversal-curse", "The reversal curse",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "word_size": Int(1, 3), "max_len": Int(0, 100_000),
           "threads": Int(0, 1024),
           "epochs": Int(0), "lr": Float(0.0, 10.0)},     # 0: chosen by runs.curse_schedule
    presets={"paper": REVERSAL_CURSE_PAPER},
    checks=(heads_divide, _position_table(lambda p: 2 * p.get("word_size", 1) + 1)),
    metrics=("train_prob", "valid_prob", "chance_prob"),
    claims=(Claim("train_prob >= 0.99"), Claim("valid_prob <= chance_prob")),
))


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
    checks=(heads_divide, _icl_sizes, _position_table(lambda p: 7)),
    metrics=("train_prob", "valid_prob", "chance_prob"),
    claims=(Claim("valid_prob >= 0.9"),),
))


def _fix_methods(p: dict) -> None:
    if "methods" in p and ("baseline" not in p["methods"] or len(set(p["methods"])) != len(p["methods"])):
        raise ValueError(f"parameter methods={p['methods']!r} is not allowed: expected distinct methods "
                         "including 'baseline' (every fix is compared with it)")


def _a_fix_works(m: dict) -> bool:
    """At least one fix (a ``valid_prob_<fix>`` other than the baseline) answers the reverse questions."""
    fixes = [v for k, v in m.items() if k.startswith("valid_prob_") and k != "valid_prob_baseline"]
    return bool(fixes) and max(fixes) >= 0.9


register(Experiment(
    "reversal-fixes", "What breaks the reversal curse",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "word_size": Int(1, 3), "max_len": Int(0, 100_000),
           "strong_weight_decay": WD, "masked_epochs": POS_INT, "masked_lr": LR, "threads": Int(0, 1024),
           "methods": Seq(Choice("baseline", "reversed_copies", "reversed_relations",
                                 "two_relations", "identity_bridge", "identity_neutral", "masked",
                                 "weight_decay", "tied"))},
    presets={"paper": {**REVERSAL_CURSE_PAPER, "seeds": 3, "masked_epochs": 3000, "masked_lr": 0.001}},
    checks=(heads_divide, _position_table(lambda p: 2 * p.get("word_size", 1) + 1), _fix_methods),
    metrics=("valid_prob_baseline", "valid_prob_reversed_relations", "valid_prob_identity_bridge",
             "valid_prob_masked", "valid_prob_weight_decay", "valid_prob_tied", "chance_prob"),
    claims=(Claim("some fix reaches valid_prob_<fix> >= 0.9", _a_fix_works),
            Claim("valid_prob_baseline <= chance_prob")),
))
