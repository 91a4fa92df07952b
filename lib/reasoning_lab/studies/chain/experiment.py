"""Experiments of the chain-of-thought study."""
from __future__ import annotations

from ...experiments import cost
from ...experiments.originals import ZHU2024_GPT2, Original, values
from ...experiments.params import TRANSFORMER_RULES, Float, Int, heads_divide
from ...experiments.registry import Claim, Experiment, register

CHAIN_PAPER = {**{k: v for k, v in values(ZHU2024_GPT2).items() if k != "max_len"}, "device": "auto"}
CHAIN_DEPARTURES = {
    "data draws": "the original's recipe, drawn with PyTorch from seeds 0, 1, ... instead of NumPy's seed "
                  "1234: no triple is the original's",
    "seeds": "trained side by side as one batched model (the same models up to float rounding)",
    "max_len": "the sentence length (5 or 7 rows) instead of GPT-2's 1,024: unused rows change no result",
}


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


def _chain_cost(p: dict) -> cost.Cost:
    alphabet = p["vocab_size"] // 4
    n = min(alphabet ** p.get("word_size", 1), 2 * alphabet)
    return cost.sentence_run(p, 3 * n, 2 * p.get("word_size", 1) + 1, p["vocab_size"] + 2)


def _related_cost(p: dict) -> cost.Cost:
    return cost.sentence_run(p, 2 * (p["n_train"] + p["n_valid"]) + p["n_train"], 5, p["vocab_size"] + 2)


register(Experiment(
    "chain-of-thought", "Chain of thought: A → B, B → C does not teach A ↝ C",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "word_size": Int(1, 3),
           "held_out_fraction": Float(0.0, 1.0, open_lo=True)},
    presets={"paper": {**CHAIN_PAPER, "held_out_fraction": 0.3}},
    checks=(heads_divide, _chain_split),
    metrics=("train_prob", "valid_prob", "valid_two_step_prob", "chance_prob"),
    claims=(Claim("train_prob >= 0.99"), Claim("valid_prob <= 2 * chance_prob"),
            Claim("valid_two_step_prob >= 0.9")),
    trainer="runs:chain_run", cost=_chain_cost,
    original={**ZHU2024_GPT2, "held_out_fraction": Original(0.3, "ChainDataset: 140 trained, 60 held-out "
                                                                  "triples")},
    departures={**CHAIN_DEPARTURES,
                "loss_whole_sequence": "works here; the original's flag is ignored (it passes the freeze "
                                       "flag instead), so it always trains on the last entity, as the preset"},
))

register(Experiment(
    "chain-related-tokens", "Chains of related entities: the answer's index token is in the context",
    rules={**TRANSFORMER_RULES, "vocab_size": Int(8, 100_000), "id_pool": Int(2, 100_000),
           "n_train": Int(1, 100_000), "n_valid": Int(1, 100_000)},
    presets={"paper": {**CHAIN_PAPER, "id_pool": 600, "n_train": 200, "n_valid": 50}},
    checks=(heads_divide, _related_split),
    metrics=("train_prob", "valid_prob", "chance_prob"),
    claims=(Claim("valid_prob >= 0.9"),),
    trainer="runs:related", cost=_related_cost,
    original={**ZHU2024_GPT2, "id_pool": Original(600, "ChainDataset_related_tokens: 600 sampled ids"),
              "n_train": Original(200, "ChainDataset_related_tokens: num_train"),
              "n_valid": Original(50, "ChainDataset_related_tokens: num_val")},
    departures={**CHAIN_DEPARTURES, "metric": "the whole two-token answer; the original plots its first "
                                              "token, which the context gives away"},
))
