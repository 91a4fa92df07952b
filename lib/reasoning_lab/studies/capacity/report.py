"""Set-up and tables of the capacity chapters: one call from parameters to dataset, question bank and
entropies; size tables; summaries of saved runs (``book/data/``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ...model import count_params
from .entropy import DatasetEntropy, capacity_parts
from .profiles import Profiles, generate_profiles
from .questions import QuestionBank
from .sizing import config_for_budget, formula_count
from .vocab import Vocab, make_vocab

VOCAB_KEYS = ("n_first_names", "n_last_names", "n_cities", "n_universities", "n_employers", "n_years",
              "relations")


@dataclass
class Study:
    vocab: Vocab
    profiles: Profiles
    bank: QuestionBank
    ents: dict[str, DatasetEntropy]

    def ent(self, scheme: str = "optimal") -> DatasetEntropy:
        return self.ents[scheme]


def _get(p, key):
    return p[key] if isinstance(p, dict) else getattr(p, key)


def build(p) -> Study:
    """Vocabulary, profiles, question bank and the entropies under every name scheme, from the
    chapter's parameters (a dict such as a saved ``params.json``, or the notebook's ``run.p``)."""
    from .sweep import entropies

    vocab = make_vocab(*(_get(p, k) for k in VOCAB_KEYS))
    profiles = generate_profiles(_get(p, "n_profiles"), vocab, seed=_get(p, "seed"))
    return Study(vocab, profiles, QuestionBank(profiles, seed=_get(p, "seed")), entropies(profiles))


def size_rows(budgets, n_layers: int, vocab_size: int) -> list[dict]:
    """Per budget: width, heads, exact parameter count, embedding share and the original's formula."""
    rows = []
    for b in budgets:
        c = config_for_budget(b, n_layers, vocab_size)
        n = count_params(c)
        rows.append({"budget": b, "width": c.d_model, "heads": c.n_heads, "params": n["total"],
                     "embedding_share": n["embedding"] / n["total"], "formula": formula_count(c),
                     "undercount": n["non_embedding"] / (12 * c.n_layers * c.d_model ** 2)})
    return rows


def table(rows: list[dict], keys, width: int = 12, fmt: dict | None = None) -> str:
    """Fixed-width text table of ``rows``: one column per key, or per ``(key, header)`` pair."""
    fmt = fmt or {}
    cols = [(k, k) if isinstance(k, str) else k for k in keys]

    def cell(k, v):
        if k in fmt:
            return format(v, fmt[k])
        return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    w = width - 1                                   # one space between columns
    lines = [" ".join(f"{h[:w]:>{w}}" for _, h in cols)]
    lines += [" ".join(f"{cell(k, r[k]):>{w}}" for k, _ in cols) for r in rows]
    return "\n".join(lines)


TRAIN_KEYS = [("params", "params"), ("steps", "steps"), ("exposures", "expos."),
              ("seconds", "seconds"), ("onehop_loss_nats", "loss"), ("capacity_bits", "capacity"),
              ("bits_per_param", "bpp"), ("capacity_facts_bits", "facts"),
              ("capacity_selection_bits", "selection")]
TWO_HOP_KEYS = [("two_hop_capacity_bits", "2hop cap."), ("two_hop_loss_nats", "2hop loss"),
                ("heldout_triples_loss_nats", "held-out")]
TRAIN_FORMAT = {"exposures": ".0f", "seconds": ".0f", "capacity_bits": ",.0f",
                "capacity_facts_bits": ",.0f", "capacity_selection_bits": ",.0f",
                "two_hop_capacity_bits": ",.0f"}
SAVED_KEYS = [("params", "params"), ("non_embedding_params", "body"),
              ("exposures", "expos."), ("capacity_bits", "capacity"), ("bits_per_param", "bpp"),
              ("bits_per_non_embedding", "bpp_body"), ("facts_per_param", "facts_pp"),
              ("embedding_share", "emb"), ("onehop_accuracy", "acc")]
SAVED_FORMAT = {"exposures": ".0f", "capacity_bits": ",.0f", "embedding_share": ".0%",
                "onehop_accuracy": ".1%"}
SHORT = {"birth_date": "date", "birth_city": "city", "university": "univ.", "best_friend": "friend",
         "worst_enemy": "enemy"}


SIZE_KEYS = ["budget", "width", "heads", "params", ("embedding_share", "emb. share"),
             ("formula", "12Lh²+emb."), "undercount"]
SIZE_FORMAT = {"embedding_share": ".0%", "undercount": ".2f"}


def loss_keys(subjects) -> list:
    """Columns of the per-subject loss table (short headers)."""
    return ["params"] + [(f"loss_bits_{s}", SHORT.get(s, s[:8])) for s in subjects]


def scheme_keys(schemes) -> list:
    """Columns of the counting-scheme table: each scheme clamped, then unclamped (``.raw``)."""
    return (["params", ("bits_per_param", "bpp")]
            + [(f"capacity_{s}", s[:10]) for s in schemes]
            + [(f"capacity_{s}_unclamped", s[:5] + ".raw") for s in schemes])


def saved_run(folder: str | Path) -> dict:
    """A saved capacity run: its params, metrics, model rows (with both parameter denominators and
    the facts-only part) and its dataset entropy."""
    from .sweep import read_csv

    folder = Path(folder)
    params = json.loads((folder / "params.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = read_csv(folder / "models.csv")
    ent = build(params).ent(params["name_scheme"])
    for r in rows:
        part = capacity_parts({s: r[f"loss_bits_{s}"] for s in ent.subjects}, ent)
        r.update(facts_bits=part["facts"], selection_bits=part["selection"],
                 embedding_share=1 - r["non_embedding_params"] / r["params"],
                 bits_per_non_embedding=r["capacity_bits"] / r["non_embedding_params"],
                 facts_per_param=part["facts"] / r["params"])
    return {"params": params, "metrics": metrics, "rows": rows, "entropy": ent}


def seed_summary(runs: list[dict], key: str) -> dict[int, list[float]]:
    """``key`` of every model row across saved runs (one per seed), by parameter count."""
    out: dict[int, list[float]] = {}
    for run in runs:
        for r in run["rows"]:
            out.setdefault(r["params"], []).append(r[key])
    return out


def bits_lines(H: dict[str, float], width: int = 88) -> str:
    """Bits per answer of every subject, wrapped to ``width`` characters."""
    import textwrap

    text = "bits per answer: " + ", ".join(f"{s} {h:.2f}" for s, h in H.items())
    return textwrap.fill(text, width)


def entropy_lines(ents: dict[str, DatasetEntropy]) -> str:
    """One line per name scheme: selection terms, per-person facts and the total (bits)."""
    return "\n".join(f"{name:>12}: names {e.name_selection:9,.0f} + dates {e.date_selection:7,.0f}"
                     f" + N·ΣH {e.n * e.per_profile:9,.0f} = {e.one_hop:9,.0f} bits"
                     for name, e in ents.items())


def saved_dirs(root: str | Path, name: str = "capacity-cpu-full") -> list[Path]:
    """The saved runs of one preset: ``root/name`` (seed 0) and ``root/name-seed*``, by seed."""
    root = Path(root)
    dirs = [d for d in [root / name, *sorted(root.glob(f"{name}-seed*"))]
            if (d / "metrics.json").exists()]
    return sorted(dirs, key=lambda d: json.loads((d / "params.json").read_text())["seed"])


def _range(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def saved_glue(full: list[dict]) -> dict:
    """The numbers the chapter quotes from the saved full runs (seed 0 first), by glue name."""
    first = full[0]
    small, large = first["rows"][0], first["rows"][-1]
    across = lambda i, k: [f["rows"][i][k] for f in full]
    return {"full_small": small["params"], "full_large": large["params"],
            "full_n": first["params"]["n_profiles"], "full_entropy": first["entropy"].one_hop,
            "full_exposures": first["params"]["exposures"], "n_seeds": len(full),
            "large_bits_seed0": large["capacity_bits"], "large_bpp_seed0": large["bits_per_param"],
            "large_emb": large["embedding_share"],
            "large_bpp_body_seed0": large["bits_per_non_embedding"],
            "large_bpp_range": _range(across(-1, "bits_per_param")),
            "large_bpp_body_range": _range(across(-1, "bits_per_non_embedding")),
            "large_facts_share": large["facts_bits"] / large["capacity_bits"],
            "small_bpp_range": _range(across(0, "bits_per_param")),
            "small_body": small["non_embedding_params"],
            "small_facts_share": small["facts_bits"] / small["capacity_bits"],
            "large_enumerate": large["capacity_enumerate"] / large["params"],
            "large_independent": large["capacity_independent"] / large["params"]}


RUN_KEYS = ("seed", "output_dir", "threads", "workers", "device")


def _trainer_default(key: str):
    """What a saved run that lacks ``key`` ran with: the trainer's default for the optimiser keys added
    after it was made (betas, schedule, warm-up), as a parameter value; None for any other key."""
    from .train import BETAS, SCHEDULE

    return {"betas": list(BETAS), "schedule": SCHEDULE, "warmup_steps": 0}.get(key)


def saved_seeds(root: str | Path, rows: list[dict], p, name: str = "capacity-default") -> dict:
    """Bits per parameter of the largest model across seeds: this run's ``rows`` plus the saved runs
    ``root/name-seed*`` made with the same parameters apart from the seed. Returns the seeds, the
    values (all parameters, outside the embeddings) and their ranges as text."""
    from .sweep import read_csv

    params = p if isinstance(p, dict) else vars(p)
    same = lambda q: all(q.get(k, _trainer_default(k)) == v for k, v in params.items() if k not in RUN_KEYS)
    runs = {params["seed"]: rows[-1]}
    for d in sorted(Path(root).glob(f"{name}-seed*")):
        q = json.loads((d / "params.json").read_text())
        if (d / "models.csv").exists() and same(q) and q["seed"] not in runs:
            runs[q["seed"]] = read_csv(d / "models.csv")[-1]
    bpp = [r["bits_per_param"] for r in runs.values()]
    body = [r["capacity_bits"] / r["non_embedding_params"] for r in runs.values()]
    return {"seeds": list(runs), "bpp": bpp, "bpp_body": body,
            "default_seed_list": ", ".join(map(str, runs)),
            "text": "largest default model, bits/param by seed: " + ", ".join(
                f"seed {k} {v:.3f}" for k, v in zip(runs, bpp)),
            "default_seeds": len(runs), "default_bpp_range": _range(bpp, 3),
            "default_bpp_body_range": _range(body, 3)}


def saved_text(dirs: list[Path], full: list[dict]) -> str:
    """Where each saved run is, when it finished, how long it took, and its model table."""
    out = []
    for d, f in zip(dirs, full):
        m = f["metrics"]
        out.append(f"{d.name}: seed {f['params']['seed']}, finished {m['finished']}, "
                   f"{m['wall_seconds'] / 60:.1f} min")
        out.append(table(f["rows"], SAVED_KEYS, width=9, fmt=SAVED_FORMAT))
    return "\n".join(out)


def demo_lines(bank: QuestionBank, n: int = 4, seed: int = 0, width: int = 88) -> str:
    """A few sampled questions (half of them 2-hop) with their answers, each within ``width``."""
    import textwrap

    import torch

    demo = bank.sample(n, 0.5, torch.Generator().manual_seed(seed))
    return "\n".join(textwrap.fill(bank.text(demo, i), width, subsequent_indent="    ")
                     for i in range(len(demo)))
