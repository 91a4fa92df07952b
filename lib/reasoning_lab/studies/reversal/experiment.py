"""Experiments of the reversal study: the curse, reversal with the fact in context, and what breaks the curse."""
from __future__ import annotations

from typing import Callable

from ...experiments import cost
from ...experiments.originals import ZHU2024_GPT2, Original, values
from ...experiments.params import LR, POS_INT, TRANSFORMER_RULES, WD, Choice, Float, Int, Seq, heads_divide
from ...experiments.registry import Claim, Experiment, register

REVERSAL_PAPER = {**{k: v for k, v in values(ZHU2024_GPT2).items() if k != "max_len"}, "device": "auto"}

# What every reversal and chain preset departs from the original in, whatever its parameters.
ZHU_DEPARTURES = {
    "data draws": "the original's recipe, drawn with PyTorch from seeds 0, 1, ... instead of NumPy's seed "
                  "1234: no pairing is the original's",
    "seeds": "trained side by side as one batched model (the same models up to float rounding)",
    "training metric": "evaluated about 30 times per run in evaluation mode; the original averages the "
                       "probability seen during the training steps, with dropout on",
}


def _position_table(seq_len: Callable[[dict], int]) -> Callable[[dict], None]:
    """``max_len`` (rows of the position table) is 0 (= the sentence length) or at least the sentence length."""
    def check(p: dict) -> None:
        n = seq_len(p)
        if p.get("max_len", 0) and p["max_len"] < n:
            raise ValueError(f"parameter max_len={p['max_len']} is not allowed: expected 0 or at least the "
                             f"sentence length {n}")
    return check


def _pairs(p: dict) -> int:
    alphabet = p["vocab_size"] // 4
    return min(alphabet ** p.get("word_size", 1), 2 * alphabet)


def _curse_cost(p: dict) -> cost.Cost:
    n = _pairs(p)
    return cost.sentence_run({**p, "epochs": p["epochs"] or 150}, 2 * n, 2 * p.get("word_size", 1) + 1,
                             p["vocab_size"] + 2)


def _icl_cost(p: dict) -> cost.Cost:
    return cost.sentence_run(p, p["n_a"] * int(0.7 * p["n_b"]), 7, p["vocab_size"] + 3)


def _fixes_cost(p: dict) -> cost.Cost:
    one = cost.sentence_run({**p, "epochs": max(p["epochs"], p["masked_epochs"])}, 4 * _pairs(p),
                            2 * p.get("word_size", 1) + 1, p["vocab_size"] + 8)
    k = len(p.get("methods", [1]))
    return cost.Cost(one.memory_bytes, k * one.flops, f"{k} methods, each {one.what}")


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
    trainer="runs:curse", cost=_curse_cost,
    original=ZHU2024_GPT2, departures={
        **ZHU_DEPARTURES,
        "rotary positions": "rotate the whole head; the original meant 32 of 64 dimensions and its rotary "
                            "code raises NameError (absolute positions, the preset's, are unaffected)",
        "word_size 3": "the original caps 3-token entities at 100 + 50 pairs (a debugging limit); ours keeps "
                       "the recipe's 400 (the preset uses 1-token entities, unaffected)"},
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
    trainer="runs:in_context", cost=_icl_cost,
    original={**ZHU2024_GPT2, "vocab_size": Original(400, "marlo-z/reversal_curse_analysis, ReverseDataset_ICL"),
              "n_a": Original(100, "ReverseDataset_ICL: 100 A tokens"),
              "n_b": Original(10, "ReverseDataset_ICL: 10 B partners each, 7 trained")},
    departures=ZHU_DEPARTURES,
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
    trainer="runs:fixes", cost=_fixes_cost,
    preset_origin="The fixes go beyond the anchors: no original trains them on this task. The preset is the "
                  "reversal-curse chapter's `paper` model and optimiser (Zhu et al.'s GPT-2), with 3 seeds "
                  "per method and 3,000 epochs at learning rate 1e-3 for the masked (MLM-U) model, our "
                  "choice.",
))
