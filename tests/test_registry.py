"""The registry: studies found on disk, claims as data, parameters read the way papermill reads them,
and the thread rule of ``lab.start``."""
import ast
import json
import subprocess
import sys

import jupytext
import nbformat
import papermill as pm
import pytest
import torch

from reasoning_lab.experiments import registry, session
from reasoning_lab.experiments.registry import Claim, Experiment


def test_every_notebook_is_an_experiment_of_a_discovered_study():
    exps = registry.available()
    assert sorted(e.name for e in exps) == sorted(p.stem for p in registry.NOTEBOOKS.glob("*.md"))
    assert len(exps) == 11
    assert {e.study for e in exps} == set(registry.study_names()) == {
        "reversal", "chain", "theory", "capacity", "shortest_paths"}


def test_a_missing_notebook_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "NOTEBOOKS", tmp_path)
    monkeypatch.setattr(registry, "_LOADED", False)
    with pytest.raises(FileNotFoundError, match=r"reversal-curse \(declared in studies/reversal/experiment.py\)"):
        registry.available()


# ---------------------------------------------------------------------------------------------------
# Claims


def test_expression_claims():
    claim = Claim("valid_prob <= 2 * chance_prob")
    assert claim.names() == ["chance_prob", "valid_prob"]
    assert claim.holds({"valid_prob": 0.01, "chance_prob": 0.005})
    assert not claim.holds({"valid_prob": 0.011, "chance_prob": 0.005})
    assert claim.failure({"valid_prob": 0.011, "chance_prob": 0.005}) == (
        "valid_prob <= 2 * chance_prob fails: chance_prob=0.005, valid_prob=0.011")
    assert "missing ['chance_prob']" in claim.failure({"valid_prob": 0.0})
    assert Claim("a > max(b, c)").holds({"a": 3, "b": 1, "c": 2})
    assert not Claim("a > max(b, c)").holds({"a": 2, "b": 1, "c": 2})
    assert Claim("0 <= a < 1").holds({"a": 0.5}) and not Claim("0 <= a < 1").holds({"a": 1})


@pytest.mark.parametrize("text", ["__import__('os').getcwd() > 0", "m.x > 1", "a if b else c", "a > 'x'",
                                  "a >", "a > 1 or b > 1", "sum([a]) > 1"])
def test_claims_outside_the_small_language_are_refused(text):
    with pytest.raises(ValueError, match="claim"):
        Claim(text)


def test_a_claim_must_read_declared_metrics():
    exp = Experiment("claims-check", "t", rules={}, metrics=("a",), claims=(Claim("a < b"),))
    with pytest.raises(ValueError, match=r"reads \['b'\]"):
        registry.register(exp)
    assert "claims-check" not in registry.REGISTRY


# The claims of the book (SPEC, "What the default (CPU) runs must show"): per experiment, metrics that
# satisfy every claim, and single changes that must each break one.
CASES = {
    "reversal-curse": ({"train_prob": 0.995, "valid_prob": 0.001, "chance_prob": 0.005},
                       [{"train_prob": 0.98}, {"valid_prob": 0.006}]),
    "reversal-in-context": ({"train_prob": 1.0, "valid_prob": 0.95, "chance_prob": 0.01},
                            [{"valid_prob": 0.89}]),
    "reversal-fixes": ({"valid_prob_baseline": 0.001, "valid_prob_masked": 0.2, "valid_prob_tied": 0.93,
                        "chance_prob": 0.01},
                       [{"valid_prob_tied": 0.5}, {"valid_prob_baseline": 0.02}]),
    "chain-of-thought": ({"train_prob": 0.999, "valid_prob": 0.015, "valid_two_step_prob": 0.95,
                          "chance_prob": 0.01},
                         [{"train_prob": 0.9}, {"valid_prob": 0.021}, {"valid_two_step_prob": 0.8}]),
    "chain-related-tokens": ({"train_prob": 1.0, "valid_prob": 0.92, "chance_prob": 0.01}, [{"valid_prob": 0.5}]),
    "capacity": ({"capacity_bits": 9000.0, "dataset_entropy_bits": 10000.0}, [{"capacity_bits": 10001.0}]),
    "bfs-handcrafted": ({"mse": 1e-12}, [{"mse": 1e-8}]),
    "shortest-paths": ({"pretrain_loss": 0.05, "label_variance": 0.6}, [{"pretrain_loss": 0.07}]),
    "bilinear-dynamics": ({"train_loss_ratio": 0.01, "reverse_loss_ratio": 1.0}, [{"train_loss_ratio": 1.0}]),
    "one-layer-dynamics": ({"forward_weight": 3.0, "reverse_weight": 0.1, "indirect_weight": 0.2},
                           [{"forward_weight": 0.2}, {"reverse_weight": 3.5}, {"indirect_weight": 3.0}]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_claims_of_the_book(name):
    exp = registry.get(name)
    good, breaks = CASES[name]
    assert exp.claims
    assert [c.failure(good) for c in exp.claims] == [None] * len(exp.claims)
    for change in breaks:
        failed = [c.text for c in exp.claims if c.failure({**good, **change})]
        assert len(failed) == 1, (change, failed)


def test_every_experiment_with_a_claim_in_the_book_declares_it():
    assert {e.name for e in registry.available() if e.claims} == set(CASES)


def test_no_fix_at_all_fails_the_fixes_claim():
    exp = registry.get("reversal-fixes")
    assert any(c.failure({"valid_prob_baseline": 0.0, "chance_prob": 0.01}) for c in exp.claims)


# ---------------------------------------------------------------------------------------------------
# Parameters: papermill's reading, Python's reading and the registry agree


def _cell(exp):
    nb = jupytext.read(exp.notebook)
    return nb, next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


@pytest.mark.parametrize("exp", registry.available(), ids=lambda e: e.name)
def test_parameters_are_typed_documented_and_read_alike(exp, tmp_path):
    nb, cell = _cell(exp)
    file = tmp_path / f"{exp.name}.ipynb"
    nbformat.write(nb, str(file))
    seen = pm.inspect_notebook(str(file))                 # the whole notebook, as papermill sees it
    info = exp.parameters()
    assert list(seen) == list(info)
    for name, p in seen.items():
        assert p["inferred_type_name"] != "None" and p["help"], f"{exp.name}: {name} needs a type and help"
        assert (p["inferred_type_name"], p["default"], p["help"]) == (
            info[name]["type"], info[name]["default"], info[name]["help"])
    python = {}
    exec(compile(cell.source, exp.name, "exec"), {}, python)   # what the kernel runs
    python = {k: v for k, v in python.items() if not k.startswith("__")}   # drop __annotations__
    defaults = exp.defaults()
    assert defaults == python and all(type(defaults[k]) is type(python[k]) for k in python)
    assert all(len(line) <= 88 for line in cell.source.splitlines())


def test_parameters_of_an_ipynb_and_of_tricky_lines_read_as_papermill_reads_them(tmp_path):
    """Other layouts go through jupytext; values over several lines, quoted annotations; a '#' in a
    string, which papermill takes for a comment, is refused."""
    from papermill.translators import PythonTranslator

    source = ('a: int = 3  # first\n'
              'names: list[str] = [\n    "x", "y",\n    "z"]  # several lines\n'
              'mode: "Union[bool, str]" = False  # quoted annotation\n'
              'plain = 0.5  # no annotation')
    ours = registry.read_parameters(source)
    theirs = {p.name: p for p in PythonTranslator.inspect({"source": source})}
    assert list(ours) == list(theirs)
    for name, p in theirs.items():
        assert (ours[name]["type"], ours[name]["default"], ours[name]["help"]) == (
            p.inferred_type_name, p.default, p.help)
    assert ours["names"]["value"] == ["x", "y", "z"]
    with pytest.raises(ValueError, match=r"papermill does not read .*\['names'\]"):
        registry.read_parameters(source.replace('"y"', '"y#2"'))
    file = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        source, metadata={"tags": ["parameters"]})]), str(file))
    assert registry.notebook_parameter_info(file) == ours


def test_help_notebook_prints_types_and_help(tmp_path):
    exp = registry.get("reversal-fixes")
    file = tmp_path / "reversal-fixes.ipynb"
    nbformat.write(jupytext.read(exp.notebook), str(file))
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(file)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name, p in exp.parameters().items():
        assert f"{name}: {p['type']} (default {p['default']})" in out.stdout
        assert p["help"] in out.stdout


def test_papermill_injection_after_an_annotated_cell(tmp_path):
    """papermill appends a cell of plain assignments after the annotated one; every kind of value arrives
    as the same Python value, and the session validates it as usual."""
    exp = registry.get("reversal-fixes")
    nb, cell = _cell(exp)
    dump = nbformat.v4.new_code_cell(
        "import json\n"
        f"names = {list(exp.defaults())!r}\n"
        f"json.dump({{k: globals()[k] for k in names}}, open({str(tmp_path / 'seen.json')!r}, 'w'))")
    small = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[cell, dump])
    given = {"methods": ["baseline", "tied"], "betas": [0.8, 0.99], "lr": 0.02, "tie_embeddings": True,
             "pos_encoding": "rotary", "compile": "reduce-overhead", "masked_epochs": 7, "dropout": 0}
    out = pm.execute_notebook(small, str(tmp_path / "out.ipynb"), parameters=given, kernel_name="python3",
                              progress_bar=False)
    tags = [c.metadata.get("tags", []) for c in out.cells]
    assert "parameters" in tags[0] and "injected-parameters" in tags[1]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {**exp.defaults(), **given}
    resolved = exp.resolve("default", seen)
    assert resolved["dropout"] == 0.0 and isinstance(resolved["dropout"], float)
    assert resolved["compile"] == "reduce-overhead" and resolved["tie_embeddings"] is True


def test_reading_parameters_is_cached_per_file_version(tmp_path):
    exp = registry.get("one-layer-dynamics")
    copy = tmp_path / "one-layer-dynamics.md"
    copy.write_text(exp.notebook.read_text())
    assert registry.notebook_parameters(copy)["steps"] == 4000
    copy.write_text(exp.notebook.read_text().replace("steps: int = 4000", "steps: int = 12"))
    assert registry.notebook_parameters(copy)["steps"] == 12


def test_a_cell_papermill_cannot_read_fails_loudly(tmp_path):
    text = registry.get("one-layer-dynamics").notebook.read_text()
    bad = tmp_path / "bad.md"
    bad.write_text(text.replace("# gradient-descent steps", "# steps (default = 4000)"))
    with pytest.raises(ValueError, match=r"papermill does not read the parameters cell.*\['steps'\]"):
        registry.notebook_parameters(bad)


# ---------------------------------------------------------------------------------------------------
# Threads


def test_thread_rule(monkeypatch):
    monkeypatch.delenv(session.THREADS_ENV, raising=False)
    assert session.thread_count({"threads": 3}) == 3
    assert session.thread_count({"threads": 0}) == 0
    assert session.thread_count({}) == 0
    monkeypatch.setenv(session.THREADS_ENV, "2")
    assert session.thread_count({"threads": 3}) == 2 and session.thread_count({}) == 2
    monkeypatch.setenv(session.THREADS_ENV, "")
    assert session.thread_count({"threads": 3}) == 3
    monkeypatch.setenv(session.THREADS_ENV, "two")
    with pytest.raises(ValueError, match="REASONING_LAB_THREADS='two'"):
        session.thread_count({"threads": 3})


@pytest.mark.parametrize("env, expected", [(None, 3), ("2", 2)])
def test_start_applies_the_thread_rule(monkeypatch, env, expected):
    before = torch.get_num_threads()
    if env is None:
        monkeypatch.delenv(session.THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(session.THREADS_ENV, env)
    try:
        run = session.start("reversal-curse", {"threads": 3, "device": "cpu"})
        assert torch.get_num_threads() == expected and run.p.threads == expected
    finally:
        torch.set_num_threads(before)


def test_no_notebook_sets_threads_itself():
    for exp in registry.available():
        code = [c.source for c in jupytext.read(exp.notebook).cells if c.cell_type == "code"]
        calls = [n for src in code for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Attribute)
                 and n.attr == "set_num_threads"]
        assert not calls, f"{exp.name} sets torch threads; lab.start does it (REASONING_LAB_THREADS, threads)"


# ---------------------------------------------------------------------------------------------------
# The paper presets against the originals


def test_every_paper_preset_says_where_it_comes_from():
    """Each ``paper`` preset either is declared ours (with why), or gives the original's value and source
    of each of its parameters; every value that differs from the original's says how and why."""
    from reasoning_lab.experiments import presets

    for exp in registry.available():
        assert "paper" in exp.presets, exp.name
        assert exp.preset_origin or exp.original, exp.name
        assert presets.unexplained(exp) == [], exp.name
    ours = {e.name for e in registry.available() if e.preset_origin}
    assert ours == {"bilinear-dynamics", "one-layer-dynamics", "reversal-fixes", "capacity-probes",
                    "bfs-handcrafted"}
    cap = registry.get("capacity")
    cap.presets["paper"]["lr"] = 0.5                                # an unexplained change is caught
    try:
        assert presets.unexplained(cap) == ["capacity: lr=0.5 differs from the original's 0.001 without a "
                                            "stated reason"]
    finally:
        cap.presets["paper"]["lr"] = 0.001
    text = presets.book_markdown()
    assert "| `betas` | [0.99, 0.999] | [0.99, 0.999] | train_llama.py |" in text
    assert text.count("**The `paper` preset is ours.**") == len(ours)
