"""Experiments of the chain-of-thought study."""
from __future__ import annotations

from ...experiments.params import Float, Int
from ...experiments.registry import REVERSAL_PAPER, TRANSFORMER_RULES, Claim, Experiment, heads_divide, register


def _chain_split(p: dict) -> None:
    from .task import n_chain_triples, n_held_out

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
    checks=(heads_divide, _chain_split),
    metrics=("train_prob", "valid_prob", "valid_two_step_prob", "chance_prob"),
    claims=(Claim("train_prob >= 0.99"), Claim("valid_prob <= 2 * chance_prob"),
            Claim("valid_two_step_prob >= 0.9")),
))

register(Experiment(
    "chain-related-tokens", "Chains of related entities: the answer's index token is in the context",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "id_pool": Int(2, 100_000),
           "n_train": Int(1, 100_000), "n_valid": Int(1, 100_000)},
    presets={"paper": {**REVERSAL_PAPER, "id_pool": 600, "n_train": 200, "n_valid": 50}},
    checks=(heads_divide, _related_split),
    metrics=("train_prob", "valid_prob", "chance_prob"),
    claims=(Claim("valid_prob >= 0.9"),),
))
