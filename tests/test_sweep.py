"""Sweeps with the local launcher: a failing point does not stop the others and is named at the end, a
rerun skips what is done, an interrupted sweep leaves no process behind; option checks and dry runs."""
import json
import signal
import subprocess
import sys

import pytest

from reasoning_lab.experiments import cli as lab_cli
from reasoning_lab.experiments import runner
from reasoning_lab.experiments import sweep as sw
from reasoning_lab.experiments.sweep import status_path
from sweep_helpers import TINY, checkpoint_epoch, cli, marked_env, sweep_rows, wait_for_checkpoint, wait_no_marked


# epochs of a point that must still be training when it is interrupted: its first checkpoint comes after
# a tenth of them, and the rest takes far longer than cancelling does
LONG = 20_000


def test_failed_point_is_recorded_others_finish_and_rerun_runs_only_it(tmp_path):
    out = tmp_path / "sw"
    # seed=1 cannot write its metrics (a folder is in the way): its notebook raises in the last cell. The
    # folder is this sweep's, and seed=1's run folder records its own run, so both are taken as they are.
    from reasoning_lab.experiments.folder import RunFolder

    params = runner.prepare("reversal-curse", "default", {**dict(a.split("=") for a in TINY[1::2]),
                                                          "epochs": 2, "seed": 1})[1]
    RunFolder(out / "seed=1", "reversal-curse", params).close()
    (out / "sweep.json").write_text(json.dumps({"experiment": "reversal-curse"}))
    (out / "seed=1" / "metrics.json").mkdir(parents=True)
    env, mark = marked_env()
    res = cli("sweep", "reversal-curse", "--grid", "seed=0,1", "-p", "epochs=2", *TINY, "--jobs", "2",
              "--out", out, env=env)
    assert res.returncode == 1, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "1 of 2" in last and "seed=1" in last and "seed=0" not in last, res.stderr
    rows = sweep_rows(out, "seed")
    assert [rows[s]["status"] for s in "01"] == ["done", "failed"]
    assert "IsADirectoryError" in rows["1"]["error"] and rows["1"]["log"].endswith(".err")
    assert float(rows["0"]["train_prob"]) > 0 and rows["1"]["train_prob"] == ""
    status = json.loads(status_path(out / "seed=1").read_text())
    assert status["status"] == "failed" and "IsADirectoryError" in status["error"]
    assert (out / "seed=1" / "reversal-curse.failed.ipynb").exists()   # the executed notebook shows the cell
    assert wait_no_marked(mark) == []

    done_before = status_path(out / "seed=0").stat().st_mtime_ns
    (out / "seed=1" / "metrics.json").rmdir()
    res = cli("sweep", "reversal-curse", "--grid", "seed=0,1", "-p", "epochs=2", *TINY, "--jobs", "2",
              "--out", out, env=env)
    assert res.returncode == 0, res.stderr
    assert "1 already done, 1 to run" in res.stdout
    assert status_path(out / "seed=0").stat().st_mtime_ns == done_before
    rows = sweep_rows(out, "seed")
    assert [rows[s]["status"] for s in "01"] == ["done", "done"]
    assert json.loads((out / "seed=1" / "metrics.json").read_text())["train_prob"] == float(rows["1"]["train_prob"])


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_interrupted_sweep_leaves_no_process(tmp_path, how):
    """SIGTERM to the sweep, or Ctrl-C (SIGINT to the terminal's whole process group), while a point
    trains: the sweep cancels its jobs, records the point as interrupted, and nothing it started is left."""
    out = tmp_path / "sw"
    env, mark = marked_env()
    proc = subprocess.Popen([sys.executable, "-m", "reasoning_lab.experiments.cli", "sweep", "reversal-curse",
                             "--grid", "seed=0", "-p", f"epochs={LONG}", *TINY, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        epoch = wait_for_checkpoint(out / "seed=0", proc)
        assert 0 < epoch < LONG
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            import os
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    assert "Traceback" not in err and len([l for l in err.splitlines() if l.strip()]) == 1, err
    assert sweep_rows(out, "seed")["0"]["status"] == "interrupted"
    assert wait_no_marked(mark) == []
    assert 0 < checkpoint_epoch(out / "seed=0") < LONG     # the checkpoint stays for the next run


@pytest.mark.parametrize("args, word", [
    (["--launcher", "pbs"], "--launcher"),
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "two"], "--jobs"),
    (["--devices", "0,0"], "--devices"),
    (["--devices", "0,1", "--jobs", "2"], "--jobs"),
    (["--partition", "gpu"], "--partition"),
    (["--launcher", "slurm"], "--time"),
    (["--launcher", "slurm", "--time", "1:xx"], "--time"),
    (["--launcher", "slurm", "--time", "10", "--devices", "0"], "--devices"),
    (["--launcher", "slurm", "--time", "10", "--sbatch-opt=--qos=x"], "--sbatch-opt"),
    (["--launcher", "slurm", "--time", "10", "--sbatch-opt", "qos"], "--sbatch-opt"),
    (["--grid", "n_layers=1,1"], "same folder"),
])
def test_bad_sweep_options_exit_2_with_one_line(args, word, tmp_path, capsys):
    rc = lab_cli.main(["sweep", "reversal-curse", "--grid", "seed=0,1", *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and word in lines[0], err
    assert not (tmp_path / "x").exists()


def test_slurm_dry_run_prints_the_batch_script_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "x"
    rc = lab_cli.main(["sweep", "reversal-curse", "--grid", "seed=0,1,2", "-p", "epochs=5", "--launcher", "slurm",
                       "--partition", "gpu", "--time", "2:30:00", "--gpus-per-job", "1", "--sbatch-opt",
                       "account=lab", "--sbatch-opt", "qos=high", "--dry-run", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=150", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --job-name=reversal-curse:seed=0"):
        assert line in text, text
    assert "srun" in text and "submitit.core._submit" in text
    assert text.count("would run") == 3 and str(out / "seed=2") in text
    assert not out.exists()


def test_parse_time_reads_slurm_formats():
    assert [sw.parse_time(t) for t in ("90", "5:30", "1:00:00", "2-0", "1-12:30", "0-0:0:1")] == \
        [90, 6, 60, 2880, 2190, 1]


def test_squeue_watcher_reads_states_and_marks_vanished_jobs_ended():
    watcher = sw._squeue_watcher_class()(delay_s=5)
    for jid in ("11", "12", "13"):
        watcher.register_job(jid)
    info = watcher.read_info("11|RUNNING|node1\n12|CANCELLED by 0|node1\n")
    assert info["11"]["State"] == "RUNNING" and info["12"]["State"] == "CANCELLED"
    assert info["13"]["State"] == "ENDED"                  # purged from squeue: it has ended
    watcher._info_dict.update(info)
    assert [watcher.is_done(j, mode="cache") for j in ("11", "12", "13")] == [False, True, True]
