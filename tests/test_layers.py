"""The library's layers, read from the imports in its source (no module is executed).

    core         model, stacked, data, train, evaluate, plots, io, devices (and any other top-level
                 module): imports no study and nothing from experiments/
    experiments  registry, params, session, runner, cli: may import core; reaches the studies only
                 through the registry's dynamic loading (importlib), never by an import statement
    studies      one folder each: may import core, and from experiments/ what their declarations use
                 (params, registry, originals, cost); never another study
    notebooks    a chapter imports core and its own study, never another study's package

and no cycles among the modules. Imports inside functions count as well as those at the top of a file, and
so do the names a package's ``__init__`` exports lazily (``lazy.exports``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "reasoning_lab"
ROOT = Path(__file__).resolve().parents[1] / "lib" / PACKAGE

# What a study's experiment declaration may import from experiments/.
DECLARATIONS = {f"{PACKAGE}.experiments.{m}" for m in ("params", "registry", "originals", "cost")}

# Import edges that break a rule and are known. Each says why it is still here.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


# Import cycles that are known, as sorted module groups. Each says why it is still here.
KNOWN_CYCLES: list[list[str]] = []


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The library modules that ``name`` imports. ``from .x import y`` counts as an import of ``x.y`` when
    that is a module, else of ``x``; parent packages are not counted (importing ``a.b`` runs ``a``'s
    ``__init__``, but the dependency is on ``a.b``)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        elif _is_exports_call(node):
            # lazy.exports(__name__, {module: names}) in a package's __init__: imports made on first use
            targets = [f"{package}.{m}.{n}" if f"{package}.{m}.{n}" in known else f"{package}.{m}"
                       for m, names in ast.literal_eval(node.args[1]).items() for n in names or ("",)]
        else:
            continue
        for target in targets:
            while target and target not in known:      # `import reasoning_lab.x.y as z` of a name
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE + ".") and target != name:
                found.add(target)
    return found


def _is_exports_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "exports")


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(name: str) -> tuple[str, str]:
    """("core" | "experiments" | "studies" | "package", study name or "")."""
    parts = name.split(".")
    if name == PACKAGE:
        return "package", ""
    if parts[1] == "experiments":
        return "experiments", ""
    if parts[1] == "studies":
        return "studies", parts[2] if len(parts) > 2 else ""
    return "core", ""


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        kind, study = layer(src)
        for dst in sorted(targets):
            if (src, dst) in KNOWN_EXCEPTIONS:
                continue
            dkind, dstudy = layer(dst)
            why = None
            if kind == "core" and dkind in ("experiments", "studies"):
                why = "core modules import no study and nothing from experiments/"
            elif kind == "experiments" and dkind == "studies":
                why = "experiments/ reaches the studies only through the registry's dynamic loading"
            elif kind == "studies" and dkind == "experiments" and dst not in DECLARATIONS:
                why = ("studies import only what declarations use from experiments/ (params, registry, "
                       "originals, cost)")
            elif kind == "studies" and dkind == "studies" and dstudy and dstudy != study:
                why = "no study imports another study (move what they share into a core module)"
            elif kind == "package" and dkind == "studies":
                why = "`import reasoning_lab` loads no study"
            if why:
                bad.append(f"{src} imports {dst}: {why}")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), plus self-imports."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def edges():
    return graph()


def test_the_import_reader_sees_the_library(edges):
    # a reader that found nothing would pass every rule: check edges that must be there
    assert "reasoning_lab.data" in edges["reasoning_lab.epochs"]
    assert "reasoning_lab.experiments.registry" in edges["reasoning_lab.studies.chain.experiment"]
    assert "reasoning_lab.studies.capacity.entropy" in edges["reasoning_lab.studies.capacity"]   # lazy exports
    assert "reasoning_lab.experiments.params" in edges["reasoning_lab"]      # exported from experiments
    assert "reasoning_lab.studies.capacity.sizing" in edges["reasoning_lab.studies.capacity.experiment"]
    assert len(edges) >= 40


def test_the_rules_catch_what_they_forbid():
    fake = {
        "reasoning_lab.train": {"reasoning_lab.studies.reversal.task"},
        "reasoning_lab.evaluate": {"reasoning_lab.experiments.session"},
        "reasoning_lab.experiments.cli": {"reasoning_lab.studies.capacity"},
        "reasoning_lab.studies.capacity.sweep": {"reasoning_lab.studies.reversal.task",
                                                 "reasoning_lab.experiments.runner",
                                                 "reasoning_lab.experiments.params", "reasoning_lab.data"},
    }
    found = violations(fake)
    assert [f.split(":")[0] for f in found] == [
        "reasoning_lab.train imports reasoning_lab.studies.reversal.task",
        "reasoning_lab.evaluate imports reasoning_lab.experiments.session",
        "reasoning_lab.experiments.cli imports reasoning_lab.studies.capacity",
        "reasoning_lab.studies.capacity.sweep imports reasoning_lab.experiments.runner",
        "reasoning_lab.studies.capacity.sweep imports reasoning_lab.studies.reversal.task"], found
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers(edges):
    found = violations(edges)
    assert not found, "\n".join(found)


def test_known_exceptions_are_still_needed(edges):
    stale = [e for e in KNOWN_EXCEPTIONS if e[1] not in edges.get(e[0], set())]
    assert not stale, f"remove from KNOWN_EXCEPTIONS (the import is gone): {stale}"


def test_no_import_cycles(edges):
    found = cycles(edges)
    new = [g for g in found if g not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(" <-> ".join(g) for g in new)
    stale = [g for g in KNOWN_CYCLES if g not in found]
    assert not stale, f"remove from KNOWN_CYCLES (the cycle is gone): {stale}"


def notebook_imports(path: Path) -> set[str]:
    """The ``reasoning_lab`` modules a chapter's code cells import."""
    import re

    code = "\n".join(re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", path.read_text(), re.S | re.M))
    code = "\n".join(l for l in code.splitlines() if not l.startswith((":", "---", "tags:")))
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith(PACKAGE)}


def test_no_chapter_imports_another_study(tmp_path):
    """A chapter imports core and its own study (the folder that declares its experiment), never another
    study's package: what two studies share lives in a core module."""
    from reasoning_lab import experiments

    chapters = experiments.available()
    assert len(chapters) >= 11
    bad = []
    for exp in chapters:
        for module in sorted(notebook_imports(exp.notebook)):
            parts = module.split(".")
            if len(parts) > 2 and parts[1] == "studies" and parts[2] != exp.study:
                bad.append(f"{exp.notebook.name} imports {module} (its study is {exp.study})")
    assert not bad, "\n".join(bad)
    fake = tmp_path / "chapter.md"
    fake.write_text("```{code-cell} ipython3\nfrom reasoning_lab.studies.reversal import runs\n```\n")
    assert notebook_imports(fake) == {"reasoning_lab.studies.reversal.runs"}
