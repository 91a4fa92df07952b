"""The book's table of full-size presets, generated from the experiments' declarations.

For every experiment: each parameter its ``paper`` preset sets (where and how fast it runs left out), our
value, the original's value and where the original states it, and how and why ours departs; or, where
the original gives no full-size configuration, that the preset is ours and why. The book's appendix
renders these rows (``tools/sphinx_ext/preset_table.py``); a test checks that every departure in value is
explained.
"""
from __future__ import annotations

from typing import Any

from . import registry
from .folder import RUN_ONLY_PARAMS


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def rows(exp: registry.Experiment) -> list[dict[str, str]]:
    """One row per parameter of the ``paper`` preset: parameter, ours, original, source, difference."""
    paper = {k: v for k, v in exp.presets.get("paper", {}).items() if k not in RUN_ONLY_PARAMS}
    out = []
    for key, value in paper.items():
        orig = exp.original.get(key)
        out.append({"parameter": key, "ours": _text(value),
                    "original": _text(orig.value) if orig is not None else "—",
                    "source": orig.source if orig is not None else "",
                    "difference": exp.departures.get(key, "")})
    for key, why in exp.departures.items():          # aspects that are not a parameter of the preset
        if key not in paper:
            out.append({"parameter": key, "ours": "", "original": "", "source": "", "difference": why})
    return out


def unexplained(exp: registry.Experiment) -> list[str]:
    """Parameters of a ``paper`` preset that the original gives but ours changes without saying why, or
    that have no source at all (for a preset that is not declared as ours)."""
    if "paper" not in exp.presets or exp.preset_origin:
        return []
    bad = []
    for key, value in exp.presets["paper"].items():
        if key in RUN_ONLY_PARAMS:
            continue
        orig = exp.original.get(key)
        if orig is None and key not in exp.departures:
            bad.append(f"{exp.name}: {key} has no source and no stated difference")
        elif orig is not None and _text(orig.value) != _text(value) and key not in exp.departures:
            bad.append(f"{exp.name}: {key}={_text(value)} differs from the original's {_text(orig.value)} "
                       "without a stated reason")
    return bad


def markdown(exp: registry.Experiment) -> str:
    """The experiment's section of the preset table, as MyST markdown."""
    lines = [f"**`{exp.name}`** — {exp.title}", ""]
    if "paper" not in exp.presets:
        return "\n".join(lines + ["No `paper` preset.", ""])
    if exp.preset_origin:
        lines += [f"**The `paper` preset is ours.** {exp.preset_origin}", ""]
    lines += ["| parameter | `paper` | original | source | how ours differs, and why |", "|---|---|---|---|---|"]
    esc = lambda t: str(t).replace("|", "\\|")
    for r in rows(exp):
        lines.append("| " + " | ".join(esc(r[k]) if k != "parameter" or not r["ours"] else f"`{r[k]}`"
                                        for k in ("parameter", "ours", "original", "source", "difference")) + " |")
    return "\n".join(lines + [""])


def book_markdown() -> str:
    """Every experiment's section, in the book's order."""
    return "\n".join(markdown(e) for e in registry.available())
