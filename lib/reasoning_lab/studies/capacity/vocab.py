"""Value lists and the word-level vocabulary of the capacity experiments.

Every list ships with the code: names and places are *generated* from consonant-vowel syllables by a
fixed enumeration (no download, no seed parameter), so ``first_names(64)`` is always the first 64 names
of ``first_names(5000)``. First names have two syllables and an optional final consonant (``Kalen``,
``Rimo``); last names have three (``Tavorel``). Cities, universities and employers are two-syllable stems
with a suffix (``Benuport``, ``Doki Institute``, ``Saru Labs``).

The tokenizer is word-level: one token per name part, per attribute value and per date part (year,
month, day). The original uses a 3,000-token byte-level BPE in which a name or a date spans several
tokens; one token per word keeps the vocabulary, and so the embedding tables, small, which matters when
the whole model has 20k-200k parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

ATTRIBUTES = ("birth_date", "birth_city", "university", "employer")
RELATIONS = ("parent", "child", "best_friend", "worst_enemy", "sibling", "spouse", "cousin", "grandparent",
             "grandchild", "business_partner", "protege", "mentor", "betrayer", "debtor", "blackmailer",
             "hero", "evil_twin")

_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
_ENDINGS = ("", "n", "r", "s", "l")
_SYLLABLES = tuple(c + v for c in _CONSONANTS for v in _VOWELS)          # 75
_CITY_SUFFIX = ("port", "ton", "ville", "ford", "burg", "field", "haven", "mouth")
_UNI_FORMS = ("University of {}", "{} Institute", "{} College", "{} Polytechnic")
_EMPLOYER_FORMS = ("{} Labs", "{} Group", "{} Industries", "{} Systems", "{} Foods", "{} Logistics")


@lru_cache(maxsize=None)
def _order(size: int, salt: int) -> np.ndarray:
    """A fixed shuffled order of ``range(size)``."""
    return np.random.RandomState(salt).permutation(size)


def _compose(n: int, parts: tuple[tuple[str, ...], ...], salt: int, what: str) -> list[str]:
    """The first ``n`` strings of a fixed shuffled enumeration of the Cartesian product of ``parts``."""
    size = int(np.prod([len(p) for p in parts]))
    if not 1 <= n <= size:
        raise ValueError(f"parameter {what}={n} is not allowed: expected an integer in [1, {size}]")
    out = []
    for code in _order(size, salt)[:n].tolist():
        word = ""
        for p in reversed(parts):
            code, k = divmod(code, len(p))
            word = p[k] + word
        out.append(word.capitalize())
    return out


def first_names(n: int) -> list[str]:
    """``n`` distinct first names (at most 28,125); also used for middle names, as in the original."""
    return _compose(n, (_SYLLABLES, _SYLLABLES, _ENDINGS), 11, "n_first_names")


def last_names(n: int) -> list[str]:
    """``n`` distinct last names (at most 1,265,625)."""
    return _compose(n, (_SYLLABLES, _SYLLABLES, _SYLLABLES, ("", "l", "n")), 13, "n_last_names")


def _stems(n: int, salt: int, what: str) -> list[str]:
    return _compose(n, (_SYLLABLES, _SYLLABLES), salt, what)


def cities(n: int) -> list[str]:
    return [stem + _CITY_SUFFIX[i % len(_CITY_SUFFIX)] for i, stem in enumerate(_stems(n, 17, "n_cities"))]


def universities(n: int) -> list[str]:
    return [_UNI_FORMS[i % len(_UNI_FORMS)].format(stem) for i, stem in enumerate(_stems(n, 19, "n_universities"))]


def employers(n: int) -> list[str]:
    return [_EMPLOYER_FORMS[i % len(_EMPLOYER_FORMS)].format(stem) for i, stem in enumerate(_stems(n, 23, "n_employers"))]


@dataclass
class Vocab:
    """Word-level vocabulary: token 0 is padding, then subject words, then one block per value list.

    ``offset[kind] + i`` is the token of item ``i`` of list ``kind`` (``first``, ``last``, ``year``,
    ``month``, ``day``, ``birth_city``, ``university``, ``employer``). Subject words are the 4 attributes
    followed by the relations (a relation word serves both as the first hop of a 2-hop question and as
    the asked-for subject).
    """

    first: list[str]
    last: list[str]
    years: list[int]
    birth_city: list[str]
    university: list[str]
    employer: list[str]
    relations: tuple[str, ...] = RELATIONS[:4]
    tokens: list[str] = field(init=False)
    offset: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.tokens = ["<pad>"]
        self.offset = {"subject": 1}
        self.tokens += [s.replace("_", " ") for s in self.subjects]
        blocks = [("first", self.first), ("last", self.last), ("year", [str(y) for y in self.years]),
                  ("month", [f"{m:02d}" for m in range(1, 13)]), ("day", [f"{d:02d}" for d in range(1, 29)]),
                  ("birth_city", self.birth_city), ("university", self.university), ("employer", self.employer)]
        for kind, items in blocks:
            self.offset[kind] = len(self.tokens)
            self.tokens += list(items)

    @property
    def subjects(self) -> tuple[str, ...]:
        return ATTRIBUTES + tuple(self.relations)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_names(self) -> int:
        """How many distinct full names the lists can form: |first| · |first| (middle) · |last|."""
        return len(self.first) ** 2 * len(self.last)

    @property
    def n_dates(self) -> int:
        return len(self.years) * 12 * 28

    def sizes(self) -> dict[str, int]:
        return {"first": len(self.first), "last": len(self.last), "year": len(self.years), "month": 12,
                "day": 28, "birth_city": len(self.birth_city), "university": len(self.university),
                "employer": len(self.employer)}

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids if int(i) != 0]


def make_vocab(n_first_names: int = 64, n_last_names: int = 128, n_cities: int = 64, n_universities: int = 64,
               n_employers: int = 64, n_years: int = 100, n_relations: int = 4, first_year: int = 1900) -> Vocab:
    """The generated lists at the given sizes (dates: ``n_years`` years from ``first_year``, days 1-28)."""
    if n_relations not in (4, 17):
        raise ValueError(f"parameter relations={n_relations} is not allowed: expected 4 or 17")
    return Vocab(first=first_names(n_first_names), last=last_names(n_last_names),
                 years=list(range(first_year, first_year + n_years)), birth_city=cities(n_cities),
                 university=universities(n_universities), employer=employers(n_employers),
                 relations=RELATIONS[:n_relations])
