"""The command line: bad input exits 2 with one line; a run writes metrics.json."""
import json
import re
import subprocess
import sys

import pytest

from reasoning_lab.experiments import cli, runner


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "reasoning_lab.experiments.cli", *args], capture_output=True, text=True)


def test_list_shows_experiments():
    out = run_cli("list")
    assert out.returncode == 0 and "reversal-curse" in out.stdout


@pytest.mark.parametrize("args, word", [
    (["run", "reversal-curse", "-p", "n_layers=-1"], "n_layers"),
    (["run", "no-such-experiment"], "reversal-curse"),
    (["run", "reversal-curse", "-p", "no_such=1"], "valid parameters"),
    (["run", "reversal-curse", "-p", "pos_encoding=sinusoid"], "pos_encoding"),
    (["run", "reversal-curse", "--preset", "huge"], "valid presets"),
    (["run", "reversal-curse", "-p", "embed_dim=30", "-p", "n_heads=4"], "embed_dim"),
    (["sweep", "reversal-curse", "--grid", "n_layers=1,0"], "n_layers"),
])
def test_bad_input_exits_2_with_one_line(args, word, tmp_path, capsys):
    """In the test process (the same ``main`` the command runs; one case below goes through a shell)."""
    try:
        rc = cli.main([*args, "--out", str(tmp_path / "x")])
    except SystemExit as exit:             # argparse's own errors
        rc = exit.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and word in lines[0], err
    assert not (tmp_path / "x").exists()   # nothing started


def test_bad_input_from_a_shell_exits_2_with_one_line(tmp_path):
    out = run_cli("run", "reversal-curse", "-p", "n_layers=-1", "--out", str(tmp_path / "x"))
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "n_layers" in lines[0], out.stderr
    assert not (tmp_path / "x").exists()


def test_split_values_respects_brackets():
    assert runner.split_values("1,2,[0.9,0.99]") == ["1", "2", "[0.9,0.99]"]


# ------------------------------------------------------------------------------ what a user sees

def test_help_documents_every_command_argument_and_option():
    parser = cli.build_parser()
    top = parser.format_help()
    for word in ("list", "run", "sweep", "--version", "examples:"):
        assert word in top, word
    subparsers = next(a for a in parser._actions if a.choices and "run" in a.choices)
    assert {a.dest for a in subparsers._choices_actions} == set(subparsers.choices)
    assert all(a.help for a in subparsers._choices_actions)
    for name, sub in subparsers.choices.items():
        assert sub.description, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, (name, action.dest)
    run_help = subparsers.choices["run"].format_help()
    for word in ("EXPERIMENT", "--preset", "--param", "--out", "--verbose"):
        assert word in run_help, word


def test_version():
    from importlib.metadata import version

    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"reasoning-lab {version('reasoning-lab')}"


def test_list_one_experiment_shows_defaults_and_presets():
    from reasoning_lab.experiments import registry

    exp = registry.get("reversal-curse")
    out = run_cli("list", "reversal-curse")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for key, value in exp.defaults().items():
        row = next(l for l in lines if l.split()[:1] == [key])
        assert (repr(value) if isinstance(value, str) else str(value)) in row and "(" in row
    assert any(l.split()[:1] == ["paper"] and "n_layers=24" in l for l in lines)
    bad = run_cli("list", "no-such-experiment")
    assert bad.returncode == 2 and "reversal-curse" in bad.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_is_a_parameter_error_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "reasoning_lab.experiments.cli", "run", "reversal-curse",
                          "-p", "device=cuda"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "device" in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == "" and list(tmp_path.iterdir()) == []   # not even runs/


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os

    from reasoning_lab import io

    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "a.json", {"x": 1})
        io.write_text(tmp_path / "b.txt", "b")
        os.umask(0o077)
        io.write_text(tmp_path / "private.txt", "c")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


def test_run_writes_metrics_and_verbose_streams_progress(tmp_path):
    """One run of the command writes metrics, parameters and the executed notebook (readable by others,
    as any new file); with ``--verbose`` the cells, the training bar and the notebook's printed output
    reach the terminal. (The quiet run is the sweep jobs' and the installed package's check.)"""
    out = tmp_path / "run"
    res = run_cli("run", "reversal-curse", "-p", "epochs=40", "-p", "seeds=1", "-p", "vocab_size=40",
                  "-p", "embed_dim=16", "-p", "n_layers=1", "--out", str(out), "--verbose")
    assert res.returncode == 0, res.stderr
    assert "[cell 1/" in res.stderr                        # one line per cell
    assert re.search(r"seeds 0-0: +\d+%\|", res.stderr)    # the kernel's training bar, as text
    assert "held out" in res.stdout                         # the notebook's own printed output
    assert "without encryption" not in res.stdout + res.stderr  # the kernel talks over IPC, not TCP
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train_prob", "valid_prob", "chance_prob"} <= set(metrics) and metrics["train_prob"] > 0
    assert (out / "reversal-curse.ipynb").exists() and (out / "params.json").exists()
    assert json.loads((out / "params.json").read_text())["epochs"] == 40
    for f in ("metrics.json", "params.json", "reversal-curse.ipynb"):
        assert (out / f).stat().st_mode & 0o777 == 0o644, f


def test_closed_pipe_and_missing_file_end_quietly(monkeypatch, capsys):
    """`reasoning-lab list | head` exits 0 without a traceback; a missing file is one line, exit 2."""
    def gone(_args):
        raise BrokenPipeError
    monkeypatch.setattr(cli, "cmd_list", gone)
    assert cli.main(["list"]) == 0

    def missing(_args):
        raise FileNotFoundError("experiment notebook missing: x needs notebooks/x.md\nmore")
    monkeypatch.setattr(cli, "cmd_list", missing)
    assert cli.main(["list"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["error: experiment notebook missing: x needs notebooks/x.md"]


def test_start_up_stays_light():
    """A kernel's ``lab.start`` reads the parameters cell without jupytext, nbformat or papermill; the
    command's processes load nbformat without jsonschema's IRI checker, and notebooks still validate."""
    code = "\n".join([
        "import sys",
        "from reasoning_lab.experiments import runner, session",
        "session.start('reversal-curse', {'device': 'cpu'})",
        "assert not {'jupytext', 'nbformat', 'papermill'} & set(sys.modules), sys.modules.keys()",
        "runner.skip_iri_checker()",
        "import jupytext, nbformat",
        "nbformat.validate(jupytext.read(session.experiments.get('reversal-curse').notebook))",
        "assert sys.modules.get('rfc3987_syntax') is None"])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
