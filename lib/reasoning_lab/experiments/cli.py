"""``reasoning-lab list | run | train | sweep`` — the command line over the experiment notebooks."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from . import registry as experiments
from . import runner


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if not _ or not key.strip():
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        if key.strip() in out:
            raise ValueError(f"{flag} {key.strip()} is given twice; give each parameter once")
        out[key.strip()] = value
    return out


def _value(v) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def cmd_list(args) -> int:
    if args.experiment:
        return describe(experiments.get(args.experiment))
    exps = experiments.available()
    if not exps:
        raise runner.RunFailed(f"no experiment notebooks found in {experiments.NOTEBOOKS}")
    for exp in exps:
        print(f"{exp.name}  —  {exp.title}")
        print(f"    notebook: {exp.notebook}")
        print(f"    presets:  default, " + ", ".join(p for p in exp.presets if p != "default"))
        print(f"    metrics:  " + ", ".join(exp.metrics))
        defaults = exp.defaults()
        print("    parameters: " + ", ".join(f"{k}={v!r}" for k, v in defaults.items()))
    return 0


def describe(exp) -> int:
    """One experiment: every parameter with its default and what is allowed, then each preset."""
    if not exp.notebook.exists():
        raise runner.RunFailed(f"{exp.name}: notebook {exp.notebook} is missing")
    defaults = exp.defaults()
    print(f"{exp.name}  —  {exp.title}")
    print(f"notebook: {exp.notebook}")
    print(f"metrics:  " + ", ".join(exp.metrics))
    print("parameters (default, allowed):")
    width = max(len(k) for k in defaults)
    for key, value in defaults.items():
        rule = exp.rules.get(key)
        allowed = rule.describe() if rule is not None else "any"
        print(f"  {key:<{width}}  {_value(value)}  ({allowed})")
    print("presets (what each changes from the defaults):")
    names = ["default", *(n for n in exp.presets if n != "default")]
    pad = max(len(n) for n in names)
    print(f"  {'default':<{pad}}  the notebook's own parameters cell")
    for name in names[1:]:
        changes = [f"{k}={_value(v)}" for k, v in exp.presets[name].items() if defaults.get(k) != v]
        text = textwrap.fill(", ".join(changes) or "(nothing: same as default)", width=100,
                             initial_indent=f"  {name:<{pad}}  ", subsequent_indent=" " * (pad + 4))
        print(text)
    return 0


def _print_metrics(metrics: dict) -> None:
    for k, v in metrics.items():
        print(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v}")


def cmd_run(args) -> int:
    metrics = runner.execute(args.experiment, args.preset, _pairs(args.param, "-p"), args.out,
                             quiet=not args.verbose, stream=args.verbose, allow_long=args.allow_long)
    _print_metrics(metrics)
    return 0


def cmd_train(args) -> int:
    metrics = runner.train_only(args.experiment, args.preset, _pairs(args.param, "-p"), args.out,
                                allow_long=args.allow_long)
    if not runner._distributed() or int(os.environ.get("RANK", "0")) == 0:
        _print_metrics(metrics)
    return 0


def cmd_sweep(args) -> int:
    from .sweep import Launcher, parse_time, run_sweep

    grid = {k: runner.split_values(v) for k, v in _pairs(args.grid, "--grid").items()}
    for key, values in grid.items():
        if not values:
            raise ValueError(f"--grid {key}= has no values: expected --grid {key}=V1,V2,...")
    if not grid:
        raise ValueError("sweep needs at least one --grid KEY=V1,V2")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices is not None else None
    launcher = Launcher(kind=args.launcher, devices=devices, jobs=_count(args.jobs, "--jobs"),
                        partition=args.partition, time_min=parse_time(args.time) if args.time else None,
                        gpus_per_job=_count(args.gpus_per_job, "--gpus-per-job"),
                        sbatch_opts=_pairs(args.sbatch_opt, "--sbatch-opt"), dry_run=args.dry_run)
    run_sweep(args.experiment, grid, args.preset, _pairs(args.param, "-p"), args.out, launcher,
              allow_long=args.allow_long)
    return 0


def _count(text: str, flag: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{flag} {text!r} is not allowed: expected a whole number")
    return int(text)


EPILOG = """examples:
  reasoning-lab list                              every experiment, its presets and parameters
  reasoning-lab list reversal-curse               one experiment: parameters with defaults, presets
  reasoning-lab run reversal-curse -p seed=3 --out runs/rc-seed3
  reasoning-lab run reversal-curse --preset paper --verbose
  reasoning-lab train capacity --preset paper --out runs/cap       then `run` the same into runs/cap
  torchrun --nproc-per-node 8 .venv/bin/reasoning-lab train capacity --preset paper --out runs/cap
  reasoning-lab sweep chain-of-thought --grid n_layers=1,2,4 --grid seed=0,1,2

An output folder holds one run: a run into a folder that holds another is refused, the same run
resumes from its checkpoints, a finished one renders again without training.
Bad input (an unknown experiment, preset or parameter, a value out of range, an unavailable device,
a run that cannot fit in memory, an --out that holds another run) prints one line and exits with
status 2 before anything is written; a notebook that fails exits 1; Ctrl-C stops at the end of the
current training step, writes the checkpoint and exits 130."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reasoning-lab", epilog=EPILOG,
                                description="The experiments of the Reasoning Lab book, one notebook each:\n"
                                            "list them, run one, or sweep one over a grid of parameters.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", help="experiments, their notebooks, parameters and presets",
                        description="Without EXPERIMENT: every experiment with its notebook, presets, metrics "
                                    "and default parameters. With EXPERIMENT: its parameters, their defaults "
                                    "and allowed values, and what each preset changes.")
    ls.add_argument("experiment", nargs="?", default=None, metavar="EXPERIMENT",
                    help="show this experiment only, in detail")
    ls.set_defaults(fn=cmd_list)
    helps = {"run": ("execute one experiment notebook (papermill) and print its metrics",
                     "Execute the experiment's notebook at the given preset and parameters. The output "
                     "folder receives the executed notebook, metrics.json, params.json, run.json (what "
                     "the folder holds), figures and checkpoints; running again into the same folder "
                     "resumes from the last checkpoint, or renders a finished (or `train`ed) run again "
                     "without training."),
             "train": ("train an experiment's run without its notebook (torchrun-able)",
                       "Train the experiment's run (the one its chapter trains) at the given preset and "
                       "parameters into --out: checkpoints, params.json, metrics.json, history.json and "
                       "the run's tables; `run` with the same parameters and --out then renders the "
                       "chapter from it without training again. Under torchrun "
                       "(torchrun --nproc-per-node N .venv/bin/reasoning-lab train ...) an experiment "
                       "that supports it trains data-parallel (DDP; --batch_size is the global batch) "
                       "and rank 0 writes: capacity. The theory chapters (bilinear-dynamics, "
                       "one-layer-dynamics) integrate their dynamics in the notebook and have no "
                       "training run of their own."),
             "sweep": ("run an experiment over a grid of parameter values",
                       "Run the experiment once per point of the grid (the product of every --grid); "
                       "each run gets its own folder under --out and sweep.csv collects the metrics. "
                       "Running the same sweep again skips the points that are done; a point folder "
                       "that holds a run with other parameters, or a sweep folder of another "
                       "experiment, is refused.")}
    for name, fn in (("run", cmd_run), ("train", cmd_train), ("sweep", cmd_sweep)):
        s = sub.add_parser(name, help=helps[name][0], description=helps[name][1])
        s.add_argument("experiment", metavar="EXPERIMENT",
                       help="experiment name, e.g. reversal-curse (see `reasoning-lab list`)")
        s.add_argument("--preset", default="default", metavar="NAME",
                       help="named set of parameters, e.g. paper (default: the notebook's own defaults)")
        s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override one parameter; repeatable; values are Python literals or plain "
                            "strings, e.g. -p seed=3 -p betas=[0.9,0.99] -p device=cuda")
        s.add_argument("--out", default=None, metavar="DIR", required=name == "train",
                       help="output folder" + ("" if name == "train" else " (default runs/EXPERIMENT/<time>)"))
        s.add_argument("--allow-long", action="store_true",
                       help="start a run estimated at an hour or more on a CPU (refused otherwise)")
        s.set_defaults(fn=fn)
        if name == "train":
            continue
        if name == "run":
            s.add_argument("--verbose", action="store_true",
                           help="stream the notebook's output and training progress bars to the terminal")
        else:
            s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                           help="values of one parameter to sweep; repeatable (the grid is their product)")
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reasoning-lab")
    except PackageNotFoundError:  # imported from a source tree without installing
        from .. import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    if argv is None:                                       # the command, a process of its own
        runner.skip_iri_checker()
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:       # e.g. an experiment whose notebook is not installed
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except BrokenPipeError:                # `reasoning-lab list | head`: the reader has gone
        try:                               # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 0
    except runner.Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    except runner.RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run again with the same --out to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
