"""The command line: bad input exits 2 with one line; a run writes metrics.json."""
import json
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
def test_bad_input_exits_2_with_one_line(args, word, tmp_path):
    out = run_cli(*args, "--out", str(tmp_path / "x"))
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and word in lines[0], out.stderr
    assert not (tmp_path / "x").exists()   # nothing started


def test_split_values_respects_brackets():
    assert runner.split_values("1,2,[0.9,0.99]") == ["1", "2", "[0.9,0.99]"]


def test_run_writes_metrics(tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "reversal-curse", "-p", "epochs=3", "-p", "seeds=1", "-p", "vocab_size=40",
                  "-p", "embed_dim=16", "-p", "n_layers=1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train_prob", "valid_prob", "chance_prob"} <= set(metrics)
    assert (out / "reversal-curse.ipynb").exists() and (out / "params.json").exists()
    assert json.loads((out / "params.json").read_text())["epochs"] == 3
