"""Sweeps through a real Slurm: the test starts a one-node cluster of its own (munged, slurmctld, slurmd; no
cgroups, no accounting database) in a temporary folder, runs a sweep with ``--launcher slurm``, cancels one
point while it trains, checks the other finishes and the cancelled one is reported, reruns the sweep so that
only that point runs again (from its checkpoint), after a rerun stopped with SIGTERM has cancelled its job,
and stops every daemon it started. A second test runs the multi-node DDP template on the same cluster.

Skipped, saying so, where Slurm and munge are not installed (``.ci/run`` installs slurm-wlm and munge) or
where the test does not run as root (slurmd needs it)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from reasoning_lab.experiments.sweep import status_path
from sweep_helpers import MARK, TINY, checkpoint_epoch, checkpoint_files, marked_env, sweep_rows, wait_for_checkpoint, wait_no_marked

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "srun")


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _config(root: Path, host: str) -> str:
    ctld_port, d_port = _free_ports(2)
    return "\n".join([
        "ClusterName=labtest", f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root}/munge/munge.socket",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "MpiDefault=none", "SwitchType=switch/none", "ReturnToService=2",
        "KillWait=2", "MailProg=/bin/true",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def _ours(root: Path) -> list[psutil.Process]:
    """Daemons and step daemons of this test's cluster, by the configuration path in their environment
    or command line."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid():
                continue
            if str(root) in " ".join(p.cmdline()) or p.environ().get("SLURM_CONF", "").startswith(str(root)):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in DAEMONS + CLIENTS if _which(b) is None]
    if missing:
        pytest.skip(f"no Slurm here (missing {', '.join(missing)}): this test needs slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.skip("the Slurm test starts slurmd, which must run as root")
    root = tmp_path_factory.mktemp("slurm")
    (root / "munge").mkdir(mode=0o755)
    for d in ("state", "spool"):
        (root / d).mkdir()
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_config(root, host))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    logs = [root / "munged.log", root / "slurmctld.log", root / "slurmd.log"]

    def start(cmd, name):
        fh = open(root / f"{name}.out", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT))

    def report():
        text = []
        for f in [*logs, *(root / f"{n}.out" for n in DAEMONS)]:
            if f.exists():
                text.append(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-15:]))
        return "\n".join(text)

    try:
        start([_which("munged"), "-F", "--force", f"--key-file={key}", f"--socket={root}/munge/munge.socket",
               f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/munged.seed",
               f"--log-file={root}/munged.log"], "munged")
        _wait(lambda: (root / "munge" / "munge.socket").exists(), 20, "munged did not create its socket", report)
        start([_which("slurmctld"), "-D", "-i", "-f", str(conf)], "slurmctld")
        start([_which("slurmd"), "-D", "-N", host, "-f", str(conf)], "slurmd")

        def idle():
            res = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            return res.returncode == 0 and res.stdout.strip() == "idle"

        _wait(idle, 60, "the node did not become idle", report)
        yield SimpleNamespace(env=env, root=root)
    finally:
        subprocess.run(["scancel", "--me"], env=env, capture_output=True)
        for p in reversed(procs):                   # slurmd, slurmctld, then munged
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        deadline = time.time() + 20
        while _ours(root) and time.time() < deadline:
            time.sleep(0.5)
        left = _ours(root)
        for p in left:
            p.kill()
        assert not left, f"processes of the test cluster survived: {[p.pid for p in left]}"
        assert all(p.poll() is not None for p in procs)


def _wait(cond, timeout, what, report):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s\n{report()}")


def _squeue(env):
    res = subprocess.run(["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T"], env=env,
                         capture_output=True, text=True, check=True)
    return dict(line.split("|") for line in res.stdout.split())


def test_slurm_sweep_cancel_one_point_others_finish_rerun_resumes_it(slurm, tmp_path):
    out = tmp_path / "sw"
    env, mark = marked_env(SLURM_CONF=slurm.env["SLURM_CONF"])
    args = [sys.executable, "-m", "reasoning_lab.experiments.cli", "sweep", "reversal-curse",
            "--grid", "epochs=2,2000", *TINY, "--launcher", "slurm", "--time", "10", "--out", str(out)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        long = out / "epochs=2000"
        epoch = wait_for_checkpoint(long, proc)
        job = json.loads(status_path(long).read_text())["job"]
        assert job and _squeue(slurm.env)[job] == "RUNNING"
        subprocess.run(["scancel", job], env=slurm.env, check=True)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert "1 of 2" in last and "epochs=2000 (cancelled" in last, stderr
    rows = sweep_rows(out, "epochs")
    assert [rows[e]["status"] for e in ("2", "2000")] == ["done", "cancelled"]
    assert float(rows["2"]["train_prob"]) > 0 and rows["2000"]["job"] == job
    assert json.loads(status_path(long).read_text())["status"] == "cancelled"
    stopped_at = checkpoint_epoch(long)
    assert epoch <= stopped_at < 2000                    # cancelled mid-run, its checkpoint kept
    checkpoint = checkpoint_files(long)
    assert wait_no_marked(mark) == []                   # no job process (kernel included) is left
    assert all(state in ("COMPLETED", "CANCELLED") for state in _squeue(slurm.env).values())

    # a rerun stopped with SIGTERM as soon as its job runs: the job is cancelled with scancel
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            status = json.loads(status_path(long).read_text())
            if status["job"] != job and status["status"] == "running":
                break
            time.sleep(0.2)
        second = status["job"]
        assert second != job, "the rerun's job did not start"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    assert _squeue(slurm.env)[second] == "CANCELLED"
    assert sweep_rows(out, "epochs")["2000"]["status"] == "interrupted"
    assert wait_no_marked(mark) == []

    done_before = status_path(out / "epochs=2").stat().st_mtime_ns
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "1 already done, 1 to run" in res.stdout
    assert status_path(out / "epochs=2").stat().st_mtime_ns == done_before
    rows = sweep_rows(out, "epochs")
    assert [rows[e]["status"] for e in ("2", "2000")] == ["done", "done"]
    assert rows["2000"]["job"] not in (job, second)
    # the rerun continued the same checkpoint file (same folder, same settings) to the end
    assert checkpoint_files(long) == checkpoint and checkpoint_epoch(long) == 2000
    assert wait_no_marked(mark) == []


def test_train_ddp_sbatch_template_trains_the_preset_data_parallel(slurm, tmp_path):
    """slurm/train-ddp.sbatch as shipped, with the GPU and node options overridden on the sbatch command
    line for this one-node CPU cluster: srun starts torchrun, torchrun two gloo ranks of `reasoning-lab
    train capacity --preset paper` (sizes shrunk with -p; the template sets no hyper-parameter)."""
    out = tmp_path / "cap"
    bin_dir = Path(sys.executable).parent
    env = {**slurm.env, "PYTHON": sys.executable, "REASONING_LAB": str(bin_dir / "reasoning-lab"),
           "PROCS_PER_NODE": "2", "REASONING_LAB_QUIET": "1", "MASTER_ADDR": "127.0.0.1"}   # the node's name
    script = Path(__file__).resolve().parents[1] / "slurm" / "train-ddp.sbatch"          # need not resolve
    shrink = [x for kv in ("n_profiles=40", "budgets=[80000]", "n_layers=1", "exposures=2", "batch_size=32",
                           "device=cpu") for x in ("-p", kv)]
    res = subprocess.run(["sbatch", "--wait", "--nodes=1", "--gpus-per-node=0", f"--cpus-per-task={os.cpu_count()}",
                          f"--output={tmp_path}/ddp-%j.out", str(script), "capacity", "paper", str(out), *shrink],
                         env=env, capture_output=True, text=True, timeout=300, cwd=script.parents[1])
    log = "\n".join(f.read_text() for f in tmp_path.glob("ddp-*.out"))
    assert res.returncode == 0, res.stderr + log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["params"] <= 80000 and metrics["capacity_bits"] >= 0
    assert (out / "checkpoints" / "model-80000.pt").exists()
    params = json.loads((out / "params.json").read_text())
    assert params["betas"] == [0.99, 0.999] and params["schedule"] == "warmup" and params["n_cities"] == 223
    text = script.read_text()
    assert "--lr" not in text and "--betas" not in text and "reasoning-lab train" in text
