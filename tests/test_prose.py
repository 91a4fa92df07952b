"""The prose's numbers: ``reasoning_lab.prose.glue`` in the kernel, the book's ``{eval}`` role over the glued
values (tools/sphinx_ext/prose_eval.py), and chapters written only with roles JupyterLab's MyST renderer
shows."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from reasoning_lab import prose

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "sphinx_ext"))
import prose_eval  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("*.md"))
# roles jupyterlab-myst renders as text or links ({cite} shows its key); everything else in a chapter's
# prose would reach a JupyterLab reader as literal `{role}` text
LAB_ROLES = {"eval", "cite"}


def test_glue_outside_a_kernel_records_plain_values():
    prose.glue("g_int", np.int64(3))
    prose.glue("g_list", np.array([0.5, 0.25]))
    assert prose.GLUED["g_int"] == 3 and type(prose.GLUED["g_int"]) is int
    assert prose.GLUED["g_list"] == [0.5, 0.25]
    with pytest.raises(ValueError, match="identifier"):
        prose.glue("not a name", 1)
    with pytest.raises(ValueError, match="cannot be quoted"):
        prose.glue("g_obj", object())
    with pytest.raises(ValueError, match="finite"):
        prose.glue("g_nan", float("nan"))


def test_glue_in_a_kernel_binds_the_name_and_records_it_for_the_book(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from reasoning_lab.prose import glue\nglue('g_share', 0.125)\n"
                       "own = 1", store_history=False).raise_error()
        assert shell.user_ns["g_share"] == 0.125
        shell.run_cell("glue('g_share', 0.25)", store_history=False).raise_error()   # a cell run again
        assert shell.user_ns["g_share"] == 0.25
        res = shell.run_cell("glue('own', 2)", store_history=False)
        assert isinstance(res.error_in_exec, ValueError) and "already a variable" in str(res.error_in_exec)
        assert shell.user_ns["own"] == 1
        shell.run_cell("glue('own', 1)", store_history=False).raise_error()   # the same value: allowed
    finally:
        InteractiveShell.clear_instance()


def test_book_role_evaluates_expressions_over_glued_values_only():
    values = {"n": 12345, "share": 0.4567, "label": "1.9–2.1", "xs": [1, 2]}
    assert prose_eval.evaluate('f"{n:,}"', values) == "12,345"
    assert prose_eval.evaluate('f"{share:.0%}"', values) == "46%"
    assert prose_eval.as_text(prose_eval.evaluate("label", values)) == "1.9–2.1"
    assert prose_eval.as_text(prose_eval.evaluate("share", values)) == "0.4567"
    assert prose_eval.evaluate("max(xs) - n", values) == -12343
    for bad, why in [("missing", "not glued"), ("n.real", "Attribute"), ("open('x')", "functions"),
                     ("__import__('os')", "functions"), ("n +", "not a Python expression"),
                     ("xs[5]", "IndexError")]:
        with pytest.raises(prose_eval.ExpressionError, match=why):
            prose_eval.evaluate(bad, values)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_prose_uses_roles_jupyterlab_renders(chapter):
    text = chapter.read_text()
    prose_only = re.sub(r"```\{code-cell\}.*?```", "", text, flags=re.S)
    roles = set(re.findall(r"\{([a-z][\w:+-]*)\}`", prose_only))
    assert roles <= LAB_ROLES, (f"{chapter.name} uses {sorted(roles - LAB_ROLES)}: JupyterLab shows them as "
                                "literal text (numbers: {eval} over glued names; pages: a Markdown link)")
    for expr in re.findall(r"\{eval\}`([^`]*)`", prose_only):
        prose_eval.evaluate(expr, {name: 1.0 for name in re.findall(r"[A-Za-z_]\w*", expr)} | {"f": 0})


def test_chapters_need_no_book_package():
    """A chapter runs with the package's own dependencies: nothing from myst-nb or Jupyter Book."""
    for chapter in CHAPTERS:
        assert not re.search(r"^\s*(from|import) (myst_nb|jupyter_book|sphinx)", chapter.read_text(), re.M), chapter


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_prose_describes_checks_without_naming_test_code(chapter):
    """Readers are told what is checked, not the names of the tests' files and functions."""
    prose_only = re.sub(r"```\{code-cell\}.*?```", "", chapter.read_text(), flags=re.S)
    named = re.findall(r"`(tests/[\w/]+\.py|test_\w+)`", prose_only)
    assert not named, f"{chapter.name} names test code in its prose: {named}"


def test_bibliography_has_no_tex_the_book_shows_raw():
    """pybtex renders a TeX command it does not know (\\texttt, \\emph, ...) as raw text on every page
    that cites the entry; \\url is the one the book's bibliography style understands."""
    bib = (ROOT / "book" / "references.bib").read_text()
    assert not [c for c in re.findall(r"\\([A-Za-z]+)", bib) if c != "url"], "TeX commands in references.bib"
