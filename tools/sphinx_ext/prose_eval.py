"""Sphinx extension: the ``{eval}`` inline expressions of the chapters' prose, evaluated when the book is
built, over the values the executed notebook glued (``reasoning_lab.prose.glue``).

A chapter quotes a number as ``{eval}`f"{n_profiles:,}"```. JupyterLab's MyST renderer evaluates that
expression in the live kernel; myst-nb would need a live kernel too (its ``eval`` role works only when
the book executes notebooks itself, inline), while this book is built from the execution cache. So this
role replaces myst-nb's: it reads the values glued in the cached notebook's outputs (myst-nb collects
them as glue data) and evaluates the expression over them alone — names, constants, f-strings with
format specs, arithmetic, indexing and a few builtins; no other variable, attribute or call. An
expression that names a value the notebook did not glue, or that fails, is a build warning (the book
is built with ``-W``), so every number in the text comes from the run.
"""
from __future__ import annotations

import ast

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxRole

LOG = logging.getLogger(__name__)
BUILTINS = {"abs": abs, "round": round, "min": min, "max": max, "len": len, "int": int, "float": float,
            "str": str, "sum": sum, "format": format}
ALLOWED = (ast.Expression, ast.Name, ast.Load, ast.Constant, ast.JoinedStr, ast.FormattedValue, ast.BinOp,
           ast.UnaryOp, ast.operator, ast.unaryop, ast.Subscript, ast.Slice, ast.Tuple, ast.List,
           ast.Call, ast.Compare, ast.cmpop, ast.IfExp, ast.BoolOp, ast.boolop)


class ExpressionError(ValueError):
    pass


def glued_values(document) -> dict:
    """The values glued in this document's executed notebook, by name (empty for a page that is not a
    notebook)."""
    renderer = document.get("nb_renderer") if hasattr(document, "get") else None
    if renderer is None:
        return {}
    values = {}
    for name, output in renderer.renderer.nb_client.glue_data.items():
        text = output.get("data", {}).get("text/plain")
        if text is None:
            continue
        try:
            values[name] = ast.literal_eval(text if isinstance(text, str) else "".join(text))
        except (ValueError, SyntaxError):
            continue   # glued by other means than reasoning_lab.prose.glue: not a plain value
    return values


def evaluate(expression: str, values: dict):
    """``expression`` over ``values``; raises ExpressionError with a one-line reason."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise ExpressionError(f"not a Python expression: {err.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED):
            raise ExpressionError(f"{type(node).__name__} is not allowed in the prose's expressions")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in BUILTINS):
            raise ExpressionError("only these functions may be called: " + ", ".join(sorted(BUILTINS)))
        if isinstance(node, ast.Name) and node.id not in values and node.id not in BUILTINS:
            raise ExpressionError(f"{node.id!r} was not glued by the notebook")
    try:
        return eval(compile(tree, "<prose>", "eval"), {"__builtins__": BUILTINS}, dict(values))
    except Exception as err:  # noqa: BLE001 - any failure of the expression is reported the same way
        raise ExpressionError(f"{type(err).__name__}: {err}") from None


def as_text(value) -> str:
    """What JupyterLab shows for the value: a string as it is, anything else as its repr."""
    return value if isinstance(value, str) else repr(value)


class EvalRole(SphinxRole):
    def run(self):
        document = self.inliner.document
        try:
            text = as_text(evaluate(self.text, glued_values(document)))
        except ExpressionError as err:
            LOG.warning(f"{{eval}}`{self.text}`: {err}", location=self.get_location(), type="prose",
                        subtype="eval")
            problem = nodes.problematic(self.rawtext, self.rawtext)
            return [problem], []
        return [nodes.inline(text, text, classes=["prose-value"])], []


def setup(app):
    # after myst-nb, whose own `eval` role needs a live kernel
    app.setup_extension("myst_nb")
    app.add_role("eval", EvalRole(), override=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
