"""Synthetic people: N profiles, each a unique name, four attributes and R relations to other profiles.

A profile holds a full name (first, middle, last), a birth date (year, month, day with day <= 28), a birth
city, a university, an employer and R relations (the first 4 or all 17 of ``vocab.RELATIONS``). Values are
drawn uniformly and independently; each relation is an independent uniform draw of *another profile's
index*, as the original's "uniform" mode does: self-links are allowed and relations carry no meaning
(a parent's child need not be the person). The original's "bipartite" mode is documented there as broken
and is not offered. Full names are distinct (duplicates are redrawn).

Everything is a tensor; ``load_profiles_jsonl`` reads the original datasets' rows
(``EleutherAI/profiles_dataset_*`` exported as JSON lines) into the same structure.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .vocab import ATTRIBUTES, RELATIONS, Vocab


@dataclass
class Profiles:
    vocab: Vocab
    first: torch.Tensor        # [N] index into vocab.first
    middle: torch.Tensor       # [N] index into vocab.first
    last: torch.Tensor         # [N] index into vocab.last
    year: torch.Tensor         # [N] index into vocab.years
    month: torch.Tensor        # [N] 0..11
    day: torch.Tensor          # [N] 0..27
    birth_city: torch.Tensor   # [N]
    university: torch.Tensor   # [N]
    employer: torch.Tensor     # [N]
    relations: torch.Tensor    # [N, R] index of the related profile

    def __len__(self) -> int:
        return self.first.shape[0]

    @property
    def n_relations(self) -> int:
        return self.relations.shape[1]

    @property
    def subjects(self) -> tuple[str, ...]:
        return ATTRIBUTES + RELATIONS[: self.n_relations]

    def name_tokens(self) -> torch.Tensor:
        """[N, 3] tokens of the full names."""
        o = self.vocab.offset
        return torch.stack([self.first + o["first"], self.middle + o["first"], self.last + o["last"]], dim=1)

    def date_tokens(self) -> torch.Tensor:
        o = self.vocab.offset
        return torch.stack([self.year + o["year"], self.month + o["month"], self.day + o["day"]], dim=1)

    def date_codes(self) -> torch.Tensor:
        """One integer per birth date (for counting distinct dates)."""
        return (self.year * 12 + self.month) * 28 + self.day

    def name(self, i: int) -> str:
        v = self.vocab
        return f"{v.first[int(self.first[i])]} {v.first[int(self.middle[i])]} {v.last[int(self.last[i])]}"

    def value(self, i: int, subject: str) -> str:
        """The answer to "What was <profile i>'s <subject>?" as display text."""
        v = self.vocab
        if subject == "birth_date":
            return f"{v.years[int(self.year[i])]}-{int(self.month[i]) + 1:02d}-{int(self.day[i]) + 1:02d}"
        if subject in ATTRIBUTES:
            return getattr(v, subject)[int(getattr(self, subject)[i])]
        return self.name(int(self.relations[i, RELATIONS.index(subject)]))

    def to_rows(self) -> list[dict]:
        """Rows in the original datasets' format (birth_date as an ISO timestamp string)."""
        rows = []
        for i in range(len(self)):
            row = {"name": self.name(i), "index": i, "birth_date": self.value(i, "birth_date") + "T00:00:00",
                   "birth_city": self.value(i, "birth_city"), "university": self.value(i, "university"),
                   "employer": self.value(i, "employer")}
            for r, rel in enumerate(RELATIONS[: self.n_relations]):
                j = int(self.relations[i, r])
                row[rel] = {"name": self.name(j), "index": j}
            rows.append(row)
        return rows


def distinct_codes(space: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct integers drawn uniformly from ``range(space)`` (redrawing duplicates)."""
    if n > space:
        raise ValueError(f"cannot draw {n} distinct names from {space} possible ones: use longer name lists")
    codes = torch.empty(0, dtype=torch.long)
    while len(codes) < n:
        merged = torch.cat([codes, torch.randint(space, (2 * (n - len(codes)) + 16,), generator=generator)])
        order = torch.argsort(merged, stable=True)
        first = torch.ones(len(merged), dtype=torch.bool)
        first[1:] = merged[order][1:] != merged[order][:-1]
        keep = torch.zeros(len(merged), dtype=torch.bool)
        keep[order[first]] = True
        codes = merged[keep][:n]            # earlier draws keep priority: the result is a uniform sample
    return codes


def generate_profiles(n: int, vocab: Vocab, seed: int = 0) -> Profiles:
    """``n`` profiles with distinct names; every field an independent uniform draw (vectorized)."""
    g = torch.Generator().manual_seed(seed)
    s = vocab.sizes()
    codes = distinct_codes(vocab.n_names, n, g)
    first, rest = codes % s["first"], codes // s["first"]
    middle, last = rest % s["first"], rest // s["first"]
    draw = lambda k: torch.randint(s[k], (n,), generator=g)
    year, month, day = draw("year"), draw("month"), draw("day")
    city, uni, emp = draw("birth_city"), draw("university"), draw("employer")
    relations = torch.randint(n, (n, len(vocab.relations)), generator=g)
    return Profiles(vocab, first, middle, last, year, month, day, city, uni, emp, relations)


def _parse_date(value) -> dt.date:
    """A timestamp as the exports write it: ISO text, or seconds / milliseconds since 1970."""
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) > 1e11 else value
        return (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)).date()
    text = str(value).strip().replace("Z", "")
    return dt.datetime.fromisoformat(text.replace(" ", "T")).date() if "T" in text or " " in text \
        else dt.date.fromisoformat(text[:10])


def load_profiles_jsonl(path: str | Path) -> Profiles:
    """Read profiles in the format of the original datasets (one JSON object per line).

    Each row has ``name``, ``index``, ``birth_date``, ``birth_city``, ``university``, ``employer`` and one
    ``{"name", "index"}`` object per relation (4 or 17 of them). The value lists of the vocabulary are
    built from the file itself (sorted distinct values); days after the 28th are clamped to 28, as the
    original generator does.
    """
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no profiles")
    rows.sort(key=lambda r: int(r["index"]))
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: profile indices must be 0..N-1")
    rels = tuple(r for r in RELATIONS if r in rows[0])
    if rels != RELATIONS[: len(rels)] or len(rels) not in (4, 17):
        raise ValueError(f"{path}: expected the first 4 or all 17 relations {RELATIONS}, found {rels}")
    parts = [r["name"].split() for r in rows]
    if any(len(p) < 3 for p in parts):
        raise ValueError(f"{path}: every name needs a first, a middle and a last part")
    firsts = [p[0] for p in parts]
    middles = [" ".join(p[1:-1]) for p in parts]
    lasts = [p[-1] for p in parts]
    dates = [_parse_date(r["birth_date"]) for r in rows]
    y0, y1 = min(d.year for d in dates), max(d.year for d in dates)
    first_list = sorted(set(firsts) | set(middles))
    lists = {k: sorted({r[k] for r in rows}) for k in ("birth_city", "university", "employer")}
    vocab = Vocab(first=first_list, last=sorted(set(lasts)), years=list(range(y0, y1 + 1)), relations=rels,
                  **lists)

    def index(values, table):
        pos = {v: i for i, v in enumerate(table)}
        return torch.tensor([pos[x] for x in values], dtype=torch.long)

    fi = {v: i for i, v in enumerate(first_list)}
    li = {v: i for i, v in enumerate(vocab.last)}
    t = lambda xs: torch.tensor(xs, dtype=torch.long)
    relations = t([[int(r[rel]["index"]) for rel in rels] for r in rows])
    if (relations < 0).any() or (relations >= len(rows)).any():
        raise ValueError(f"{path}: a relation points outside 0..N-1")
    return Profiles(vocab, first=t([fi[x] for x in firsts]), middle=t([fi[x] for x in middles]),
                    last=t([li[x] for x in lasts]), year=t([d.year - y0 for d in dates]),
                    month=t([d.month - 1 for d in dates]), day=t([min(d.day, 28) - 1 for d in dates]),
                    birth_city=index([r["birth_city"] for r in rows], lists["birth_city"]),
                    university=index([r["university"] for r in rows], lists["university"]),
                    employer=index([r["employer"] for r in rows], lists["employer"]), relations=relations)


def save_profiles_jsonl(profiles: Profiles, path: str | Path) -> None:
    from ...io import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in profiles.to_rows()))
