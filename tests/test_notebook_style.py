"""The chapters read as prose plus a few library calls, in the book's column (88 characters)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.md"))
COLUMN = 88
# Code lines of all chapters together (non-blank, non-comment, outside the parameters cell): the
# library holds the rest. The chapters had 1,263 such lines before their figure and set-up code moved
# into the library.
CODE_BUDGET = 842
LONGEST_FUNCTION = 6          # body lines of a function defined in a code cell


def code_cells(path: Path) -> list[tuple[str, str]]:
    """(metadata block, source) of each code cell of a MyST notebook."""
    out = []
    for m in re.finditer(r"```\{code-cell\}[^\n]*\n(.*?)```", path.read_text(), re.S):
        body = m.group(1)
        meta = re.match(r"(:tags:[^\n]*\n|---\n.*?\n---\n)", body, re.S)
        out.append((meta.group(0) if meta else "", body[meta.end():] if meta else body))
    return out


def code_lines(path: Path) -> int:
    return sum(1 for meta, src in code_cells(path) if "parameters" not in meta
               for line in src.splitlines() if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_column(path):
    long = [line for _, src in code_cells(path) for line in src.splitlines() if len(line) > COLUMN]
    assert not long, f"{len(long)} code line(s) longer than {COLUMN} characters, e.g. {long[0]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_library_sized_functions_in_cells(path):
    for _, src in code_cells(path):
        lines = [line for line in src.splitlines() if not line.lstrip().startswith(("%", "!"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                size = node.end_lineno - node.body[0].lineno + 1
                assert size <= LONGEST_FUNCTION, (
                    f"{node.name} in {path.name} has {size} lines: move it into the library")


def test_chapters_stay_thin():
    total = sum(code_lines(p) for p in NOTEBOOKS)
    assert total <= CODE_BUDGET, f"{total} code lines in the chapters (budget {CODE_BUDGET})"


# What a chapter must not call: the pieces a study's run is built from. A chapter trains through
# run.train() (Experiment.train), the one definition of its run that every other entrance calls too.
RUN_PIECES = ("seed_runs(", "train_seeds(", "train_one(", ".fit(", "lab.fit(", "train_capacity(", "train_steps(",
              "train_models(", "train_methods(", "LoopConfig(", "epoch_loop(", "loop_config(", "torch.optim.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_chapter_trains_only_through_its_experiments_run(path):
    from reasoning_lab import experiments

    exp = experiments.get(path.stem)
    code = "\n".join(src for _, src in code_cells(path))
    found = [piece for piece in RUN_PIECES if piece in code]
    assert not found, f"{path.name} assembles a run itself ({found}): train through run.train()"
    if exp.trainer:
        assert code.count("run.train(") == 1, f"{path.name} should call run.train() once"
