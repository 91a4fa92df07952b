"""``reasoning-lab list | run | sweep`` — the command line over the experiment notebooks."""
from __future__ import annotations

import argparse
import sys

from . import registry as experiments
from . import runner


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def cmd_list(args) -> int:
    for exp in experiments.available():
        print(f"{exp.name}  —  {exp.title}")
        print(f"    notebook: notebooks/{exp.notebook.name}")
        print(f"    presets:  default, " + ", ".join(p for p in exp.presets if p != "default"))
        print(f"    metrics:  " + ", ".join(exp.metrics))
        defaults = exp.defaults()
        print("    parameters: " + ", ".join(f"{k}={v!r}" for k, v in defaults.items()))
    return 0


def cmd_run(args) -> int:
    metrics = runner.execute(args.experiment, args.preset, _pairs(args.param, "-p"), args.out,
                             quiet=not args.verbose)
    for k, v in metrics.items():
        print(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import Launcher, parse_time

    grid = {k: runner.split_values(v) for k, v in _pairs(args.grid, "--grid").items()}
    if not grid:
        raise ValueError("sweep needs at least one --grid KEY=V1,V2")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices is not None else None
    launcher = Launcher(kind=args.launcher, devices=devices, jobs=_count(args.jobs, "--jobs"),
                        partition=args.partition, time_min=parse_time(args.time) if args.time else None,
                        gpus_per_job=_count(args.gpus_per_job, "--gpus-per-job"),
                        sbatch_opts=_pairs(args.sbatch_opt, "--sbatch-opt"), dry_run=args.dry_run)
    runner.sweep(args.experiment, grid, args.preset, _pairs(args.param, "-p"), args.out, launcher)
    return 0


def _count(text: str, flag: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{flag} {text!r} is not allowed: expected a whole number")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reasoning-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="experiments, their notebooks, parameters and presets").set_defaults(fn=cmd_list)
    for name, fn in (("run", cmd_run), ("sweep", cmd_sweep)):
        s = sub.add_parser(name)
        s.add_argument("experiment")
        s.add_argument("--preset", default="default")
        s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
        s.add_argument("--out", default=None, help="output folder (default runs/EXPERIMENT/<time>)")
        s.set_defaults(fn=fn)
        if name == "run":
            s.add_argument("--verbose", action="store_true", help="show progress bars")
        else:
            s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2")
            s.add_argument("--launcher", default="local", help="local (default: processes on this "
                           "machine) or slurm (one batch job per point)")
            s.add_argument("--devices", default=None, help="local: GPU ids, one job per GPU, e.g. 0,1,2,3")
            s.add_argument("--jobs", default="1", help="local without --devices: points run at once on CPUs")
            s.add_argument("--partition", default=None, help="slurm: partition")
            s.add_argument("--time", default=None, help="slurm (required) and local: time limit per "
                           "point, minutes or [D-]HH:MM:SS")
            s.add_argument("--gpus-per-job", default="0", help="slurm: GPUs per point")
            s.add_argument("--sbatch-opt", action="append", default=[], metavar="KEY=VALUE",
                           help="slurm: extra sbatch option, e.g. account=abc (repeatable)")
            s.add_argument("--dry-run", action="store_true", help="print what would run; start nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except runner.RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run again with the same --out to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
