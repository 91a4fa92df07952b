"""The experiment registry: each experiment is one notebook plus the rules for its parameters and presets,
and the claims its default run must satisfy.

Defaults live in exactly one place, the notebook's ``parameters`` cell (papermill overrides it); they are
read as papermill's inspection reads them (:func:`read_parameters`; the tests compare the two), so
``papermill --help-notebook`` and the registry see the same names, types, defaults and help. The library
holds what a notebook cannot: which values are allowed, the named presets and the claims. Each study
declares its experiments in ``studies/<study>/experiment.py``; the registry finds those files itself
(:func:`load_studies`).
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib
import operator
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .locations import data_dir, notebook_dir
from .params import COMMON, Rule, did_you_mean, validate

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = notebook_dir()   # the checkout's notebooks/, or the copy shipped in the package
DATA = data_dir()            # the checkout's book/data/, or the copy shipped in the package
STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"
STUDIES_PACKAGE = "reasoning_lab.studies"


# ---------------------------------------------------------------------------------------------------
# Claims: what the book says a default run shows


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.USub: operator.neg}
_FUNCS = {"max": max, "min": min, "abs": abs}


def _check_expression(node: ast.AST, text: str) -> None:
    """Allow only comparisons and arithmetic over metric names, numbers, max/min/abs and ``and``."""
    for sub in ast.walk(node):
        ok = isinstance(sub, (ast.Expression, ast.Compare, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.And,
                              ast.Name, ast.Load, ast.Call, *_OPS))
        ok = ok or (isinstance(sub, ast.Constant) and isinstance(sub.value, (int, float))
                    and not isinstance(sub.value, bool))
        if isinstance(sub, ast.Call):
            ok = (isinstance(sub.func, ast.Name) and sub.func.id in _FUNCS and not sub.keywords)
        if not ok:
            raise ValueError(f"claim {text!r}: {type(sub).__name__} is not allowed (use metric names, "
                             "numbers, + - * /, comparisons, and, max, min, abs)")


def _evaluate(node: ast.AST, metrics: dict[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, metrics)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return metrics[node.id]
    if isinstance(node, ast.UnaryOp):
        return _OPS[type(node.op)](_evaluate(node.operand, metrics))
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](_evaluate(node.left, metrics), _evaluate(node.right, metrics))
    if isinstance(node, ast.BoolOp):
        return all(_evaluate(v, metrics) for v in node.values)
    if isinstance(node, ast.Call):
        return _FUNCS[node.func.id](*(_evaluate(a, metrics) for a in node.args))
    left = _evaluate(node.left, metrics)
    for op, right_node in zip(node.ops, node.comparators):
        right = _evaluate(right_node, metrics)
        if not _OPS[type(op)](left, right):
            return False
        left = right
    return True


@dataclass(frozen=True)
class Claim:
    """One thing the default run must show, checked on its metrics by ``tests/expectations.py``.

    ``Claim("valid_prob <= chance_prob")``: the text is the check, a comparison over metric names (numbers,
    ``+ - * /``, ``and``, ``max``, ``min`` and ``abs`` allowed). A claim that needs more takes a function of
    the metrics dict that returns True when it holds, and the text says what it checks:
    ``Claim("some fix reaches valid_prob >= 0.9", lambda m: ...)``.
    """
    text: str
    test: Callable[[dict[str, Any]], bool] | None = None

    def __post_init__(self):
        if self.test is None:
            try:
                tree = ast.parse(self.text, mode="eval")
            except SyntaxError:
                raise ValueError(f"claim {self.text!r} is not an expression over metric names") from None
            _check_expression(tree, self.text)

    @property
    def _tree(self) -> ast.Expression:
        return ast.parse(self.text, mode="eval")

    def names(self) -> list[str]:
        """The metrics an expression claim reads (empty for a claim with its own test)."""
        if self.test is not None:
            return []
        return sorted({n.id for n in ast.walk(self._tree) if isinstance(n, ast.Name)} - set(_FUNCS))

    def holds(self, metrics: dict[str, Any]) -> bool:
        if self.test is not None:
            return bool(self.test(metrics))
        return bool(_evaluate(self._tree, metrics))

    def failure(self, metrics: dict[str, Any]) -> str | None:
        """None when the claim holds, else one line with the claim and the values it saw."""
        missing = [n for n in self.names() if n not in metrics]
        if missing:
            return f"{self.text}: metrics missing {missing}"
        if self.holds(metrics):
            return None
        seen = self.names() or sorted(metrics)
        return f"{self.text} fails: " + ", ".join(f"{k}={metrics[k]!r}" for k in seen if k in metrics)


# ---------------------------------------------------------------------------------------------------
# Experiments


@dataclass
class Experiment:
    name: str
    title: str
    rules: dict[str, Rule]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: tuple[Callable[[dict], None], ...] = ()
    metrics: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()      # what the default run must show (tests/expectations.py)
    trainer: str = ""                   # "module:function" of its study: the one definition of its run
    data_parallel: bool = False         # `reasoning-lab train` under torchrun trains it data-parallel
    cost: Callable[[dict], Any] | None = None   # params -> cost.Cost: refuses what cannot fit, up front
    original: dict[str, Any] = field(default_factory=dict)     # paper-preset parameter -> originals.Original
    departures: dict[str, str] = field(default_factory=dict)   # parameter or aspect -> how and why ours differs
    preset_origin: str = ""             # set when the paper preset is ours: why the original gives none
    study: str = ""                     # the folder under studies/ that declares it (set when loaded)

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / f"{self.name}.md"

    def parameters(self) -> dict[str, dict[str, Any]]:
        """The notebook's parameters as papermill sees them: name -> {type, default, value, help}."""
        return notebook_parameter_info(self.notebook)

    def defaults(self) -> dict[str, Any]:
        return notebook_parameters(self.notebook)

    def resolve(self, preset: str = "default", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults, then the preset, then the overrides; all validated. Raises a one-line ValueError."""
        if preset not in self.presets and preset != "default":
            names = ["default", *sorted(p for p in self.presets if p != "default")]
            raise ValueError(f"unknown preset {preset!r} for {self.name}{did_you_mean(preset, names)} (valid "
                             "presets: " + ", ".join(names) + ")")
        values = dict(self.defaults())
        values.update(self.presets.get(preset, {}))
        values.update(overrides or {})
        return validate(self.name, self.rules, values, self.checks)

    def run_function(self) -> Callable:
        """The study's function that builds and trains this experiment's run (``trainer``)."""
        if not self.trainer:
            raise ValueError(f"experiment {self.name} has no training run of its own (it integrates its "
                             "dynamics in the chapter): use `reasoning-lab run`")
        module, function = self.trainer.split(":")
        return getattr(importlib.import_module(f"{STUDIES_PACKAGE}.{self.study}.{module}"), function)

    def train(self, params: dict[str, Any], device, checkpoint: Callable | None = None, hooks=(), **loop):
        """Train this experiment's run from validated ``params`` on ``device``: what the chapter, the
        command line (``run``, ``train``, ``sweep``), the GPU check and the Slurm template all call.
        ``checkpoint(name)`` gives each checkpoint's path (default: no checkpoints); ``hooks`` go to
        the loop; ``loop``: :class:`~reasoning_lab.train.LoopConfig` fields to override. Returns a
        :class:`~reasoning_lab.train.Trained`."""
        from ..train import no_checkpoints

        return self.run_function()(params, device, checkpoint or no_checkpoints, hooks, **loop)


# ---------------------------------------------------------------------------------------------------
# Notebook parameters, read the way papermill reads them


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The default values of the cell tagged ``parameters`` in a MyST notebook (a fresh copy)."""
    return copy.deepcopy({name: info["value"] for name, info in notebook_parameter_info(path).items()})


def notebook_parameter_info(path: Path) -> dict[str, dict[str, Any]]:
    """What ``papermill.inspect_notebook`` reports for a notebook's parameters cell (:func:`read_parameters`):
    name -> {type, default (source text), value, help}. ``value`` is the default as a Python value.
    Cached per file version (do not modify)."""
    path = Path(path)
    stat = path.stat()
    return _inspect(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _inspect(path: str, _mtime_ns: int, _size: int) -> dict[str, dict[str, Any]]:
    name = Path(path).name
    source = parameters_cell_source(Path(path))
    if source is None:
        raise ValueError(f"{name} has no cell tagged 'parameters'")
    return read_parameters(source, name)


# A MyST code cell whose options tag it "parameters", as jupytext writes it: ":tags: [parameters]" or a
# "---" block with "tags: [parameters]", then the code up to the closing fence.
_MYST_PARAMETERS = re.compile(
    r"^```\{code-cell\}[^\n]*\n(?::tags: \[parameters\]\n|---\ntags: \[parameters\]\n---\n)\n?(.*?)^```",
    re.S | re.M)


def parameters_cell_source(path: Path) -> str | None:
    """The source of the first cell tagged ``parameters`` in a notebook file (None: there is none).

    A MyST notebook written as the book's chapters are is read as text, which keeps jupytext, nbformat
    and their imports (seconds) out of every kernel's start; any other layout or format is read with
    jupytext."""
    text = path.read_text(encoding="utf-8") if path.suffix == ".md" else ""
    found = _MYST_PARAMETERS.search(text)
    if found:
        return found.group(1).rstrip("\n")
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    return cells[0].source if cells else None


def read_parameters(source: str, name: str = "notebook") -> dict[str, dict[str, Any]]:
    """The parameters of a ``parameters`` cell as papermill's inspection reads them (``papermill
    --help-notebook``): name -> {type (the annotation), default (the value's source text on one line),
    value (as a Python value), help (the comment ending the assignment)}.

    Papermill reads the cell line by line: an assignment is a line holding one ``=``, continued by the
    lines after it that hold none, and the first ``#`` of a line starts its comment. A cell it would read
    differently from Python (a line with two ``=``, a value continued on a line holding one, a ``#`` in
    a string) is an error naming the parameters concerned."""
    import io
    import tokenize

    lines = source.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    # line number -> (column, text) of the comment on that line
    comments = {t.start[0]: (t.start[1], t.string) for t in tokens if t.type == tokenize.COMMENT}
    out: dict[str, dict[str, Any]] = {}
    misread = []
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        key = target.id if isinstance(target, ast.Name) else ast.unparse(target)
        # papermill counts every '=' and takes the first '#' of a line as its comment, in strings too
        own = lines[node.lineno - 1:node.end_lineno]
        hashes = [l.find("#") == comments.get(n, (-1,))[0] for n, l in enumerate(own, node.lineno)]
        if isinstance(node, ast.Assign) and len(node.targets) != 1 or own[0].count("=") != 1 or \
                any("=" in l for l in own[1:]) or not all(hashes):
            misread.append(key)
            continue
        value_lines = ast.get_source_segment(source, node.value, padded=False).splitlines()
        annotation = getattr(node, "annotation", None)
        if annotation is None:
            type_name = "None"
        elif isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            type_name = annotation.value                     # a quoted annotation, e.g. "Union[bool, str]"
        else:
            type_name = ast.get_source_segment(source, annotation)
        default = "".join(l.strip() for l in value_lines)
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, SyntaxError):
            raise ValueError(f"{name}: the default of parameter {key} is not a literal: {default}") from None
        comment = comments.get(node.end_lineno, (0, ""))[1]
        out[key] = {"type": type_name, "default": default, "value": value,
                    "help": comment[1:].strip()}
    if misread:
        raise ValueError(f"{name}: papermill does not read the parameters cell as Python does (parameters "
                         f"{misread}); write one 'name: type = value  # help' per parameter, without '=' in "
                         "the help")
    return out


# ---------------------------------------------------------------------------------------------------
# Registration and discovery


REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    """Add an experiment (called by the studies' ``experiment.py``). Claims may read declared metrics only."""
    if exp.name in REGISTRY:
        raise ValueError(f"experiment {exp.name} is declared twice")
    # which study declares it, from the declaring module's name (as namedtuple finds its module)
    module = sys._getframe(1).f_globals.get("__name__", "")
    if not exp.study and module.startswith(STUDIES_PACKAGE + "."):
        exp.study = module[len(STUDIES_PACKAGE) + 1:].split(".")[0]
    exp.rules = {**COMMON, **exp.rules}
    for claim in exp.claims:
        unknown = [n for n in claim.names() if n not in exp.metrics]
        if unknown:
            raise ValueError(f"experiment {exp.name}: claim {claim.text!r} reads {unknown}, which are not "
                             f"among its declared metrics {list(exp.metrics)}")
    REGISTRY[exp.name] = exp
    return exp


def study_names() -> list[str]:
    """Every folder under ``studies/`` with an ``experiment.py``, by name."""
    return sorted(d.name for d in STUDIES_DIR.iterdir() if (d / "experiment.py").is_file())


def _book_order() -> dict[str, int]:
    """Notebook name -> position in the book's table of contents (``_toc.yml``; a regular install carries
    a copy beside its notebooks)."""
    toc = ROOT / "_toc.yml"
    if not toc.exists():
        toc = NOTEBOOKS / "_toc.yml"
    names = re.findall(r"file:\s*notebooks/([\w-]+)", toc.read_text()) if toc.exists() else []
    return {n: i for i, n in enumerate(names)}


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


_LOADED = False


def load_studies() -> dict[str, Experiment]:
    """Import every study's ``experiment.py`` (each registers its experiments), check that each declared
    notebook exists, and order the registry as the book does. Idempotent. A missing notebook, or a study
    whose declaration does not import, raises instead of dropping the experiment."""
    global _LOADED
    if _LOADED:
        return REGISTRY
    for study in study_names():
        importlib.import_module(f"{STUDIES_PACKAGE}.{study}.experiment")
    missing = [f"{e.name} (declared in studies/{e.study}/experiment.py) needs {_shown(e.notebook)}"
               for e in REGISTRY.values() if not e.notebook.exists()]
    if missing:
        raise FileNotFoundError("experiment notebook missing: " + "; ".join(missing))
    order = _book_order()
    ranked = sorted(REGISTRY.values(), key=lambda e: order.get(e.name, len(order)))
    REGISTRY.clear()
    REGISTRY.update((e.name, e) for e in ranked)
    _LOADED = True
    return REGISTRY


def get(name: str) -> Experiment:
    load_studies()
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}{did_you_mean(name, REGISTRY)} (valid experiments: "
                         + ", ".join(sorted(REGISTRY)) + ")")
    return REGISTRY[name]


def available() -> list[Experiment]:
    """Every registered experiment, in the book's order (each one's notebook exists: load_studies checks)."""
    return list(load_studies().values())
