"""Check a regular (non-editable) install of the project, used from outside the checkout.

Builds the wheel (``pip wheel``), checks that it carries every chapter notebook and the license, installs
it into a fresh virtual environment and, from a temporary directory far from the checkout, runs
``reasoning-lab --version``, ``reasoning-lab list`` (every registered experiment must be listed, with its
notebook inside the installed package) and one short ``reasoning-lab run``.

To stay fast the fresh environment borrows the dependencies (torch, papermill, ...) from the project's
``.venv`` through a ``.pth`` line instead of installing them again; only the project itself is installed
into it, from the wheel, with ``--ignore-installed`` so that the editable install in ``.venv`` plays no
part (the check also asserts that the package is imported from the fresh environment).

    python tools/wheel_check.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the quickest experiment at tiny sizes (a few seconds of training; most of the time is kernel start-up)
RUN = ["run", "reversal-curse", "-p", "epochs=3", "-p", "seeds=1", "-p", "vocab_size=40",
       "-p", "embed_dim=16", "-p", "n_layers=1"]


def sh(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise SystemExit(f"wheel check FAILED: {' '.join(map(str, cmd))} exited {res.returncode}\n"
                         f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def expected_experiments() -> list[str]:
    sys.path.insert(0, str(ROOT / "lib"))
    from reasoning_lab.experiments import registry

    return list(registry.load_studies())


def check(work: Path) -> list[str]:
    py = sys.executable
    notes = []
    dist = work / "dist"
    sh([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)], cwd=work)
    (wheel,) = dist.glob("reasoning_lab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(Path(n).name for n in names if n.startswith("reasoning_lab/notebooks/") and n.endswith(".md"))
    sources = sorted(p.name for p in (ROOT / "notebooks").glob("*.md"))
    if shipped != sources:
        raise SystemExit(f"wheel check FAILED: {wheel.name} ships notebooks {shipped}, expected {sources}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        raise SystemExit(f"wheel check FAILED: {wheel.name} has no LICENSE in its metadata")
    notes.append(f"{wheel.name}: {len(shipped)} notebooks, LICENSE")

    venv = work / "venv"
    sh([py, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    vpy = venv / "bin" / "python"
    purelib = Path(sh([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      cwd=work).stdout.strip())
    (purelib / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh([py, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--ignore-installed",
        str(wheel)], cwd=work)

    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cli = str(venv / "bin" / "reasoning-lab")
    where = sh([str(vpy), "-c", "import reasoning_lab, reasoning_lab.experiments.registry as r; "
                "print(reasoning_lab.__file__); print(r.NOTEBOOKS)"], cwd=elsewhere, env=env).stdout.split()
    if not all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where):
        raise SystemExit(f"wheel check FAILED: the package or its notebooks come from {where}, "
                         f"not from the fresh environment {venv}")
    version = sh([cli, "--version"], cwd=elsewhere, env=env).stdout.strip()
    listing = sh([cli, "list"], cwd=elsewhere, env=env).stdout
    listed = [line.split()[0] for line in listing.splitlines() if line and not line.startswith(" ")]
    expected = expected_experiments()
    if listed != expected:
        raise SystemExit(f"wheel check FAILED: `reasoning-lab list` outside the checkout listed {listed}, "
                         f"expected {expected}")
    notes.append(f"{version}: `list` shows all {len(listed)} experiments, notebooks from {where[1]}")

    out = elsewhere / "run"
    res = sh([cli, *RUN, "--out", str(out)], cwd=elsewhere, env=env)
    metrics = json.loads((out / "metrics.json").read_text())
    if not {"train_prob", "valid_prob", "chance_prob"} <= set(metrics):
        raise SystemExit(f"wheel check FAILED: the run wrote metrics {sorted(metrics)}")
    if not (out / "reversal-curse.ipynb").is_file():
        raise SystemExit("wheel check FAILED: the run left no executed notebook")
    notes.append(f"`{' '.join(RUN[:2])}` at tiny sizes: valid_prob={metrics['valid_prob']:.4g}, "
                 f"{len(res.stdout.splitlines())} metric lines printed")
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = ap.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        notes = check(args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="wheel-check-") as tmp:
            notes = check(Path(tmp))
    for n in notes:
        print("  " + n)
    print("wheel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
