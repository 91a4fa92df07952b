"""Experiments of the knowledge-capacity study."""
from __future__ import annotations

from ...experiments import cost
from ...experiments.originals import Original
from ...experiments.params import BETAS, LR, POS_INT, WD, Bool, Choice, Float, Int, Rule, Seq
from ...experiments.registry import Claim, Experiment, register


def _capacity_checks(p: dict) -> None:
    from .sizing import llama_config
    from ...model import count_params

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


def _questions(p: dict) -> tuple[float, float]:
    """(steps, tokens a step) of one model's run: every 1-hop fact seen ``exposures`` times."""
    frac1 = 1.0 - (1.0 / (1.0 + p["hop_ratio"]) if p["two_hop"] else 0.0)
    facts = p["n_profiles"] * (4 + p["relations"])
    return max(1.0, p["exposures"] * facts / (p["batch_size"] * frac1)), p["batch_size"] * 8.0


def _capacity_cost(p: dict) -> cost.Cost:
    steps, tokens = _questions(p)
    big = max(p["budgets"])
    width = int((big / (16 * p["n_layers"])) ** 0.5)
    one = cost.transformer(big, 1, tokens, steps, p["n_layers"], width, 4000)
    flops = sum(cost.transformer(b, 1, tokens, steps, p["n_layers"], width, 4000).flops for b in p["budgets"])
    return cost.Cost(one.memory_bytes, flops, f"{len(p['budgets'])} models up to {big / 1e6:,.1f}M parameters, "
                                              f"{steps:,.0f} steps each")


def _probes_cost(p: dict) -> cost.Cost:
    steps, tokens = _questions(p)
    d, L = p["embed_dim"], p["n_layers"]
    params = 16 * L * d * d + 2 * 4000 * d
    return cost.transformer(params, 1, tokens, steps, L, d, 4000,
                            f"{params / 1e6:,.1f}M parameters, {steps:,.0f} steps")


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
           "workers": Int(1, 256), "betas": BETAS, "schedule": Choice("cosine", "warmup"),
           "warmup_steps": Int(0, 10**9),
           "name_scheme": Choice("optimal", "enumerate", "independent"),
           "two_hop_scheme": Choice("optimal", "big-hash", "2-hop-double")},
    presets={
        "cpu-full": {"n_profiles": 2000, "budgets": [30000, 70000], "n_layers": 2, "exposures": 1000,
                     "batch_size": 1024, "lr": 0.003, "weight_decay": 0.1, "threads": 1, "workers": 2},
        "paper": {"n_profiles": 10000, "relations": 4, "budgets": [500_000, 1_000_000, 2_000_000, 4_000_000,
                                                                   7_000_000, 10_000_000],
                  "n_layers": 4, "exposures": 1000, "batch_size": 1088, "lr": 0.001, "weight_decay": 0.1,
                  "n_first_names": 400, "n_last_names": 1000, "n_cities": 223, "n_universities": 100,
                  "n_employers": 73, "n_years": 200, "betas": [0.99, 0.999], "schedule": "warmup",
                  "warmup_steps": 1000, "threads": 0, "device": "auto"},
    },
    checks=(_capacity_checks,),
    metrics=("params", "dataset_entropy_bits", "capacity_bits", "bits_per_param"),
    claims=(Claim("capacity_bits <= dataset_entropy_bits"),),
    trainer="runs:capacity", data_parallel=True, cost=_capacity_cost,
    original={
        "n_profiles": Original(10000, "EleutherAI/profiles_dataset_10000_uniform (the Hub datasets)"),
        "relations": Original(4, "profiles_dataset_*_uniform: parent, child, best friend, worst enemy"),
        "budgets": Original([500_000, 2_000_000, 7_000_000], "train_llama.py --num_params default; spec files"),
        "n_layers": Original(4, "train_llama.py --num_layers default"),
        "exposures": Original(1000, "Allen-Zhu & Li: 1000 exposures give about 2 bits per parameter"),
        "batch_size": Original(1088, "train_llama.py: 32 sequences of about 34 questions a step"),
        "lr": Original(0.001, "train_llama.py"), "weight_decay": Original(0.1, "train_llama.py"),
        "betas": Original([0.99, 0.999], "train_llama.py"),
        "schedule": Original("warmup", "train_llama.py: schedule-free AdamW, warm-up, no decay"),
        "warmup_steps": Original(1000, "train_llama.py"),
        "n_first_names": Original(5163, "generate_profiles.py: NameDatabases us.txt first names"),
        "n_last_names": Original(88799, "generate_profiles.py: NameDatabases us.txt surnames"),
        "n_cities": Original(223, "generate_profiles.py: 223 Australian towns"),
        "n_universities": Original(100, "generate_profiles.py: 100 universities"),
        "n_employers": Original(73, "generate_profiles.py: 73 companies"),
        "n_years": Original(200, "Allen-Zhu & Li: birth years over 200 years")},
    departures={
        "budgets": "six sizes from 0.5M to 10M, so that the sweep spans the original's runs",
        "n_first_names": "fewer names: with one token per name part the vocabulary (and the embeddings) "
                         "stay small; 400 x 400 x 1,000 names still leave every one of 10,000 people distinct",
        "n_last_names": "as n_first_names",
        "optimizer": "AdamW with linear warm-up, then a constant rate; the original uses schedule-free AdamW "
                     "with muP learning-rate scaling",
        "tokens": "one token per word (name part, value, date part); the original uses a 3,000-token BPE",
        "packing": "one question per row; the original packs about 34 questions into a 512-token sequence, "
                   "where later questions can attend to earlier ones"},
))

register(Experiment(
    "capacity-probes", "Where is the bridge entity? Linear probes on 2-hop questions",
    rules={**CAPACITY_DATA_RULES, "embed_dim": Int(16, 8192), "exposures": Float(0.0, 1e7, open_lo=True),
           "probe_questions": Int(100, 1_000_000), "l2_grid": Seq(Float(0.0, 1e3)), "folds": Int(2, 20)},
    presets={"paper": {"n_profiles": 1000, "relations": 4, "n_layers": 8, "embed_dim": 256, "exposures": 2000,
                       "hop_ratio": 0.1, "probe_questions": 100_000, "threads": 0, "device": "auto"}},
    checks=(_capacity_checks,),
    metrics=("best_probe_layer", "best_probe_accuracy"),
    trainer="runs:probes", cost=_probes_cost,
    preset_origin="The original trains probes (train_probe.py) but states no full-size configuration for "
                  "them; ours is 1,000 profiles, an 8-layer width-256 model, 2,000 exposures with 2-hop "
                  "questions at ratio 0.1 and 100,000 probe questions.",
))
