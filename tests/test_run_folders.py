"""A run folder holds exactly one run, as a hostile but realistic user would try it: reruns, other
experiments, two writers, sweeps, interrupts, corrupt checkpoints, impossible sizes, bad --out paths, and
what the command says. In-process where it can be (the command's own ``main``)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from reasoning_lab.experiments import cli, runner
from reasoning_lab.experiments import sweep as sw
from reasoning_lab.experiments.folder import RunFolder, read_record

# a reversal-curse run that trains in seconds
TINY = {"seeds": 1, "vocab_size": 40, "embed_dim": 16, "n_layers": 1, "epochs": 4, "device": "cpu"}
def _args(**changes) -> list[str]:
    return [x for k, v in {**TINY, **changes}.items() for x in ("-p", f"{k}={v}")]


TINY_ARGS = _args()


def _main(capsys, *args) -> tuple[int, list[str]]:
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exit:                   # argparse's own errors
        rc = exit.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run, trained by `reasoning-lab train` (fast: no notebook)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert cli.main(["train", "reversal-curse", *TINY_ARGS, "--out", str(out)]) == 0
    return out


def test_a_folder_holding_another_run_is_refused_and_left_as_it_was(finished, capsys):
    before = _snapshot(finished)
    rc, err = _main(capsys, "run", "reversal-curse", *_args(seed=7), "--out", finished)
    assert rc == 2 and len(err) == 1 and "seed=0 (this run: 7)" in err[0] and "a folder holds one run" in err[0]
    rc, err = _main(capsys, "train", "one-layer-dynamics", "--out", finished)
    assert rc == 2 and len(err) == 1 and "training run of its own" in err[0]
    rc, err = _main(capsys, "run", "bilinear-dynamics", "--out", finished)
    assert rc == 2 and "holds a run of 'reversal-curse', not 'bilinear-dynamics'" in err[0]
    assert _snapshot(finished) == before


def test_a_second_writer_is_refused_at_once(finished, capsys):
    from reasoning_lab import experiments

    params = experiments.get("reversal-curse").resolve("default", TINY)
    with RunFolder(finished, "reversal-curse", params):            # a run holds the folder
        t0 = time.perf_counter()
        rc, err = _main(capsys, "train", "reversal-curse", *TINY_ARGS, "--out", finished)
        assert rc == 2 and "another run is writing to this folder" in err[0]
        assert time.perf_counter() - t0 < 5


def test_bad_out_paths_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cases = [(tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "is a file, so the folder cannot"),
             (tmp_path / "notempty", "not empty")]
    (tmp_path / "notempty").mkdir()
    (tmp_path / "notempty" / "mine.txt").write_text("x")
    if os.geteuid() != 0:                         # root writes anywhere
        cases.append((ro / "run", "not writable"))
    for out, words in cases:
        rc, err = _main(capsys, "run", "reversal-curse", *TINY_ARGS, "--out", out)
        assert rc == 2 and len(err) == 1 and words in err[0], (out, err)


def test_what_cannot_fit_or_would_take_hours_is_refused_before_work(tmp_path, capsys):
    huge = ["-p", "n_layers=96", "-p", "embed_dim=8192", "-p", "n_heads=64", "-p", "vocab_size=100000",
            "-p", "seeds=100"]
    rc, err = _main(capsys, "run", "reversal-curse", *huge, "--out", tmp_path / "a")
    assert rc == 2 and len(err) == 1 and "GiB" in err[0] and "more than" in err[0]
    rc, err = _main(capsys, "run", "bilinear-dynamics", "-p", "dims=[65536]", "-p", "vocab=20000",
                    "--out", tmp_path / "b")
    assert rc == 2 and "GiB" in err[0]
    rc, err = _main(capsys, "run", "chain-of-thought", "--preset", "paper", "-p", "device=cpu",
                    "-p", "seeds=1", "--out", tmp_path / "c")
    assert rc == 2 and "hours or more on a CPU" in err[0] and "--allow-long" in err[0]
    assert not any((tmp_path / d).exists() for d in "abc")


def test_sweeps_decide_done_from_the_record(tmp_path, capsys):
    """A finished point is reused only for the same run: the same sweep with another -p, or another
    experiment's sweep into the folder, is refused before anything starts."""
    out = tmp_path / "S"
    point = out / "seed=0"
    assert cli.main(["train", "reversal-curse", *_args(seed=0), "--out", str(point)]) == 0
    (point / "run.json").write_text(json.dumps({**read_record(point), "status": "finished"}))
    (out / "sweep.json").write_text(json.dumps({"experiment": "reversal-curse"}))
    assert sw.finished_metrics(point) is not None
    capsys.readouterr()
    rc, err = _main(capsys, "sweep", "reversal-curse", "--grid", "seed=0", *_args(epochs=5), "--out", out)
    assert rc == 2 and len(err) == 1 and "seed=0 holds a run of reversal-curse with epochs=4 (this run: 5)" in err[0]
    rc, err = _main(capsys, "sweep", "bilinear-dynamics", "--grid", "seed=0,1", "--out", out)
    assert rc == 2 and "holds a sweep of 'reversal-curse', not 'bilinear-dynamics'" in err[0]
    rc, err = _main(capsys, "sweep", "reversal-curse", "--grid", "seed=", "--out", tmp_path / "E")
    assert rc == 2 and "--grid seed= has no values" in err[0]
    rc, err = _main(capsys, "sweep", "reversal-curse", "--grid", "seed=0", "--grid", "seed=1", "--out", tmp_path / "E")
    assert rc == 2 and "--grid seed is given twice" in err[0]
    rc, err = _main(capsys, "sweep", "reversal-curse", "--grid", "=1", "--out", tmp_path / "E")
    assert rc == 2 and "--grid expects KEY=VALUE" in err[0]
    rc, err = _main(capsys, "sweep", "reversal-curse", "--grid", "device=cpu,cuda", "--out", tmp_path / "E")
    assert rc == 2 and "device='cuda'" in err[0]
    rc, err = _main(capsys, "sweep", "reversal-curse", "--grid", "seed=1", "--devices", "0", "--out", tmp_path / "E")
    assert rc == 2 and "--devices 0 is not allowed here: no CUDA device" in err[0]
    assert not (tmp_path / "E").exists()


def test_messages_name_the_closest_value_and_lists_parse_as_typed(tmp_path, capsys):
    rc, err = _main(capsys, "run", "reversal-curse", "-p", "n_layer=2", "--out", tmp_path / "x")
    assert rc == 2 and "did you mean 'n_layers'?" in err[0]
    rc, err = _main(capsys, "run", "reversal-curs", "--out", tmp_path / "x")
    assert rc == 2 and "did you mean 'reversal-curse'?" in err[0]
    rc, err = _main(capsys, "run", "reversal-curse", "--preset", "papr", "--out", tmp_path / "x")
    assert rc == 2 and "did you mean 'paper'?" in err[0]
    rc, err = _main(capsys, "run", "reversal-fixes", "-p", "methods=[baseline,maskd]", "--out", tmp_path / "x")
    assert rc == 2 and "methods=['baseline', 'maskd']" in err[0] and "did you mean 'masked'?" in err[0]
    from reasoning_lab import experiments

    p = experiments.get("reversal-fixes").resolve("default", {"methods": "[baseline,masked]"})
    assert p["methods"] == ["baseline", "masked"]


def _cli(*args, **kw):
    env = {**os.environ, "REASONING_LAB_THREADS": "1", "REASONING_LAB_QUIET": "1", **kw.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "reasoning_lab.experiments.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def _kernel_dirs(pid: int) -> list[Path]:
    """The kernel folders (sockets, connection file) that the command with process id ``pid`` made."""
    return list(Path(tempfile.gettempdir()).glob(f"{runner.KERNEL_DIR_PREFIX}{pid}-*"))


def test_ctrl_c_stops_within_seconds_and_the_rerun_resumes_and_re_renders(tmp_path):
    """SIGINT during a run: the training cell stops at the end of its step with a checkpoint, the command
    exits 130 with one line within seconds, no kernel or kernel folder is left; the same command resumes
    and ends with the metrics of an uninterrupted run; run again, the finished run renders again with
    its player intact."""
    long = _args(epochs=400)
    ref = _cli("train", "reversal-curse", *long, "--out", tmp_path / "ref")
    out = tmp_path / "run"
    proc = _cli("run", "reversal-curse", *long, "--out", out)
    ckpt = out / "checkpoints" / "seeds.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.communicate()[1]
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 30
    assert proc.returncode == 130, err
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("reversal-curse: running")]
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "resume" in lines[0], err
    assert read_record(out)["status"] == "interrupted"
    assert _kernel_dirs(proc.pid) == []
    assert not (out / "reversal-curse.ipynb").exists()          # never a partial notebook under its name
    res = _cli("run", "reversal-curse", *long, "--out", out)
    _, err = res.communicate(timeout=600)
    assert res.returncode == 0 and "resuming the unfinished run" in err, err
    ref.communicate(timeout=600)
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "ref"))
    assert {k: mine[k] for k in ("train_prob", "valid_prob", "train_nll", "valid_nll")} == \
        {k: theirs[k] for k in ("train_prob", "valid_prob", "train_nll", "valid_nll")}
    again = _cli("run", "reversal-curse", *long, "--out", out)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "holds the finished run" in err
    notebook = (out / "reversal-curse.ipynb").read_text()
    assert "no frames were recorded" not in notebook and notebook.count("data:image/png;base64") > 5


def test_kernel_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path, monkeypatch):
    """SIGKILL leaves a run no chance to clean up: the next run removes the kernel folders (sockets and
    connection file) of processes that are gone, and only those."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f"{runner.KERNEL_DIR_PREFIX}{int(dead.stdout)}-abc"
    alive = tmp_path / f"{runner.KERNEL_DIR_PREFIX}{os.getpid()}-def"
    for d in (gone, alive):
        d.mkdir()
        (d / "connection.json").write_text("{}")
    runner.remove_stale_kernel_dirs()
    assert not gone.exists() and alive.exists()
