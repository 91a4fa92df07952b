"""Numbers for the prose: a cell computes a value and ``glue(name, value)`` hands it to the text, which
quotes it with a MyST inline expression, e.g. ``{eval}`f"{n_profiles:,}"```.

One source serves both places a chapter is read:

- in JupyterLab the MyST renderer (jupyterlab-myst) evaluates each inline expression in the kernel, so
  ``glue`` binds ``name`` in the notebook's namespace;
- the HTML book (``tools/sphinx_ext/prose_eval.py``) evaluates the same expression when it is built, over
  the values glued in the executed notebook: ``glue`` records each value in the cell's outputs, where
  myst-nb collects it (the same hidden record myst-nb's own glue writes, so nothing is shown).

Only plain values can be glued: numbers, strings, booleans and lists, tuples or dicts of them (NumPy
scalars and arrays become Python numbers and lists). A name the notebook already uses for a variable of
its own can be glued only with that variable's value, so that quoting a number never changes one of the
chapter's variables.
"""
from __future__ import annotations

import ast
import keyword
import math
from typing import Any

# the output myst-nb's glue writes for a value that is not displayed
RECORD_PREFIX = "application/papermill.record/"

# every value glued in this process, by name (the kernel's, when running in a notebook)
GLUED: dict[str, Any] = {}


def plain(value: Any, name: str = "value") -> Any:
    """``value`` as plain Python (what ``ast.literal_eval`` of its ``repr`` gives back); raises a
    one-line ValueError for anything else."""
    if hasattr(value, "tolist") and type(value).__module__.startswith(("numpy", "torch")):
        value = value.tolist()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"glue {name!r}: {value} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, name) for v in value)
    if isinstance(value, dict):
        return {plain(k, name): plain(v, name) for k, v in value.items()}
    raise ValueError(f"glue {name!r}: a {type(value).__name__} cannot be quoted in the prose; "
                     "glue numbers, strings, or lists, tuples and dicts of them")


def _same(old: Any, value: Any) -> bool:
    try:
        return plain(old) == value
    except ValueError:
        return False


def glue(name: str, value: Any, display: bool = False) -> None:
    """Make ``value`` available to the prose as ``name`` (see the module docstring); ``display=True``
    also shows it as the cell's output."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"glue name must be a Python identifier, got {name!r}")
    value = plain(value, name)
    text = repr(value)
    if ast.literal_eval(text) != value:   # e.g. a float subclass with its own repr
        raise ValueError(f"glue {name!r}: {text} does not read back as the same value")
    try:
        from IPython import get_ipython
    except ImportError:
        shell = None
    else:
        shell = get_ipython()
    if shell is not None:
        ns = shell.user_ns
        if name in ns and name not in GLUED and not _same(ns[name], value):
            raise ValueError(f"glue name {name!r} is already a variable of the notebook, with another "
                             "value; choose a name of its own for the prose")
        ns[name] = value
    GLUED[name] = value
    if shell is not None:
        from IPython.display import display as show

        show({RECORD_PREFIX + "text/plain": text}, raw=True,
             metadata={"scrapbook": {"name": name, "mime_prefix": RECORD_PREFIX}})
        if display:
            show(value)


def glue_all(values: dict[str, Any]) -> None:
    """``glue`` every item of ``values``."""
    for name, value in values.items():
        glue(name, value)
