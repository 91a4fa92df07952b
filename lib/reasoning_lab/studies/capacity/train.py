"""The capacity trainer: fresh question batches every step, drawn from pre-tokenized tensors.

There is no fixed dataset and no epoch: each step samples ``batch_size`` questions (1-hop, or 1-hop and
2-hop mixed ``1 : 1/hop_ratio`` as the original's ``order_weights``), and the loss is the answer-token
NLL summed per question and averaged over questions. AdamW, linear warm-up then cosine decay to
``final_lr`` x ``lr``, gradient clipping. Atomic checkpoints; a rerun with the same checkpoint resumes and
ends where an uninterrupted run ends.

Run as a script for full-size runs, on one device or under ``torchrun`` (DDP: the batch is split over the
ranks, each rank draws its own questions)::

    python -m reasoning_lab.capacity.train --profiles 10000 --budget 1000000 --layers 4 --out runs/cap
    torchrun --nproc_per_node 8 -m reasoning_lab.capacity.train --profiles 25000 --relations 17 ...
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...io import progress, torch_save
from .questions import Batch, QuestionBank


@dataclass
class CapacityConfig:
    steps: int = 1000
    batch_size: int = 1024           # questions per step (all ranks together)
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: float = 0.02             # fraction of the steps
    final_lr: float = 0.1            # cosine floor, as a fraction of lr
    grad_clip: float = 1.0
    two_hop: bool = False            # mix 2-hop questions in
    hop_ratio: float = 0.1           # weights 1 : 1/hop_ratio (1-hop : 2-hop), as the original
    curriculum: bool = False         # 1-hop only until its loss < 1 nat, then the mix
    evals: int = 10                  # evaluations during training (the last step is always evaluated)
    eval_questions: int = 2000       # per 2-hop evaluation set (1-hop is evaluated on every fact)
    seed: int = 0
    device: str | torch.device = "cpu"
    checkpoint_path: str | Path | None = None
    checkpoint_every: int = 0        # steps; 0 = only at the end
    progress: bool | None = None
    desc: str | None = None

    def lr_at(self, step: int) -> float:
        warm = max(1, int(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        t = (step - warm) / max(1, self.steps - warm)
        return self.lr * (self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))


class AnswerLoss(nn.Module):
    """Summed answer-token NLL per question (nats), averaged over the batch.

    Only what the loss needs is computed: the input stops at the last position that predicts an answer
    token (position 5 for a 1-hop batch, so the 8th token is never fed in), the last block's MLP runs only
    at the answer-predicting positions, and the output layer only on the rows that predict a real answer
    token (a one-token answer leaves two of the three rows out)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        mask = answer[:, 1:]                               # position i predicts token i + 1
        cols = mask.any(0).nonzero().squeeze(1)
        x = self.model.features(tokens[:, :int(cols[-1]) + 1], index=cols.expand(B, -1))
        keep = mask[:, cols]
        logits = self.model.head(self.model.norm_f(x[keep]))
        return F.cross_entropy(logits.float(), tokens[:, 1:][:, cols][keep], reduction="sum") / B


@torch.no_grad()
def question_losses(model: nn.Module, batch: Batch, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per question: summed answer NLL (nats) and exact match of the greedy answer (teacher-forced)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, correct = [], []
    for i in range(0, len(batch), chunk):
        x = batch.tokens[i:i + chunk].to(device)
        m = batch.answer[i:i + chunk, 1:].to(device)
        logp = F.log_softmax(model(x[:, :-1]).float(), -1)
        tgt = x[:, 1:]
        tok = logp.gather(-1, tgt[..., None]).squeeze(-1)
        losses.append(-(tok * m).sum(1).cpu())
        correct.append(((logp.argmax(-1) == tgt) | ~m).all(1).cpu())
    model.train(was)
    return torch.cat(losses), torch.cat(correct)


def by_subject(values: torch.Tensor, subject: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    return {s: values[subject == k].mean().item() for k, s in enumerate(names) if (subject == k).any()}


def evaluate(model: nn.Module, sets: dict[str, Batch], subjects: tuple[str, ...]) -> dict[str, float]:
    """Mean loss (nats) and accuracy per set, plus per-subject losses in bits for the ``train_*`` sets."""
    out = {}
    for name, batch in sets.items():
        loss, ok = question_losses(model, batch)
        out[f"{name}_loss"] = loss.mean().item()
        out[f"{name}_acc"] = ok.float().mean().item()
        if name.startswith("train_"):
            for s, v in by_subject(loss / math.log(2), batch.subject, subjects).items():
                out[f"{name}_bits_{s}"] = v
    return out


@dataclass
class Result:
    history: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, **kv):
        for k, v in kv.items():
            self.history.setdefault(k, []).append(float(v))

    def subject_bits(self, split: str, subjects) -> dict[str, float]:
        return {s: self.final[f"{split}_bits_{s}"] for s in subjects if f"{split}_bits_{s}" in self.final}


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def train_capacity(model: nn.Module, bank: QuestionBank, cfg: CapacityConfig) -> Result:
    """Train ``model`` in place on questions from ``bank``; returns the evaluation history and final values."""
    import time

    dist, rank, world = _dist()
    device = torch.device(cfg.device)
    model.to(device)
    loss_fn: nn.Module = AnswerLoss(model)
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        loss_fn = DDP(loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                            **({"fused": True} if device.type == "cuda" else {}))
    local_batch = max(1, cfg.batch_size // world)
    g = torch.Generator().manual_seed(cfg.seed * 1000003 + rank)
    sets = bank.eval_sets(cfg.eval_questions, cfg.seed, two_hop=cfg.two_hop)
    p2 = 1.0 / (1.0 + cfg.hop_ratio) if cfg.two_hop else 0.0
    res, step, phase2 = Result(), 0, not cfg.curriculum
    seen = {"one": 0.0, "two": 0.0}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None

    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generators"][rank])
        res = Result(state["history"], state["final"], state["seconds"])
        step, phase2, seen = state["step"], state["phase2"], state["seen"]

    def save():
        if ckpt is None:
            return
        res.seconds = time.perf_counter() - t0
        gens = [g.get_state()]
        if dist is not None:
            gens = [None] * world
            dist.all_gather_object(gens, g.get_state())
        if rank == 0:
            torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generators": gens,
                        "history": res.history, "final": res.final, "seconds": res.seconds, "step": step,
                        "phase2": phase2, "seen": seen}, ckpt)
        if dist is not None:
            dist.barrier()

    eval_every = max(1, cfg.steps // max(1, cfg.evals))
    n_facts = bank.n * bank.K
    t0 = time.perf_counter() - res.seconds
    model.train()
    for step in progress(range(step, cfg.steps), total=cfg.steps, desc=cfg.desc, enabled=cfg.progress):
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        frac2 = p2 if phase2 else 0.0
        batch = bank.sample(local_batch, frac2, g).to(device)
        if autocast is not None:
            with autocast:
                loss = loss_fn(batch.tokens, batch.answer)
        else:
            loss = loss_fn(batch.tokens, batch.answer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        k2 = int(round(local_batch * frac2))
        seen["one"] += (local_batch - k2) * world
        seen["two"] += k2 * world
        done = step + 1
        if done % eval_every == 0 or done == cfg.steps:
            ev = evaluate(model, sets, bank.subjects)
            res.seconds = time.perf_counter() - t0
            res.add(step=done, exposures=seen["one"] / n_facts, two_hop_questions=seen["two"],
                    train_loss=loss.item(), seconds=res.seconds, **ev)
            res.final = ev
            if not phase2 and ev["train_onehop_loss"] < 1.0:
                phase2 = True
            model.train()
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            step = done
            save()
    step = cfg.steps
    res.seconds = time.perf_counter() - t0
    save()
    model.eval()
    return res


# --- command line (single device or torchrun) ---------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reasoning_lab.capacity.train",
                                description="Train one Llama-style model on profile questions and report its "
                                            "capacity in bits (runs under torchrun with DDP).")
    a = p.add_argument
    a("--profiles", type=int, default=2000, help="number of profiles N")
    a("--relations", type=int, default=4, choices=(4, 17))
    a("--budget", type=int, default=100_000, help="parameter budget (exact count <= budget)")
    a("--layers", type=int, default=2)
    a("--exposures", type=float, default=100.0, help="1-hop exposures per fact (sets the number of steps)")
    a("--batch-size", type=int, default=1024)
    a("--lr", type=float, default=3e-3)
    a("--weight-decay", type=float, default=0.1)
    a("--two-hop", action="store_true", help="mix in 2-hop questions")
    a("--hop-ratio", type=float, default=0.1)
    a("--curriculum", action="store_true")
    a("--first-names", type=int, default=64)
    a("--last-names", type=int, default=128)
    a("--values", type=int, default=64, help="cities, universities and employers (each)")
    a("--years", type=int, default=100)
    a("--profiles-file", default="", help="JSON lines in the original datasets' format (overrides generation)")
    a("--seed", type=int, default=0)
    a("--device", default="auto")
    a("--out", default="", help="folder for metrics.json and the checkpoint (rank 0 writes)")
    return p


def main(argv: list[str] | None = None) -> dict[str, float]:
    import torch.distributed as dist

    from ...devices import resolve_device, seed_everything

    from ...io import write_json
    from .entropy import capacity, dataset_entropy, two_hop_capacity
    from .profiles import generate_profiles, load_profiles_jsonl
    from .sizing import config_for_budget
    from .vocab import make_vocab
    from ...model import Transformer

    args = build_parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # under torchrun (which sets TORCHELASTIC_RUN_ID) the model is wrapped in DDP even with one process
    distributed = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    device = resolve_device(args.device)
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    rank = dist.get_rank() if distributed else 0
    try:
        seed_everything(args.seed)
        if args.profiles_file:
            profiles = load_profiles_jsonl(args.profiles_file)
        else:
            vocab = make_vocab(args.first_names, args.last_names, args.values, args.values, args.values,
                               args.years, args.relations)
            profiles = generate_profiles(args.profiles, vocab, seed=args.seed)
        bank = QuestionBank(profiles, seed=args.seed)
        mcfg = config_for_budget(args.budget, args.layers, len(profiles.vocab))
        torch.manual_seed(args.seed)
        model = Transformer(mcfg)
        frac1 = 1.0 - (1.0 / (1.0 + args.hop_ratio) if args.two_hop else 0.0)
        steps = max(1, math.ceil(args.exposures * bank.n * bank.K / (args.batch_size * frac1)))
        out = Path(args.out) if args.out else None
        cfg = CapacityConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                             two_hop=args.two_hop, hop_ratio=args.hop_ratio, curriculum=args.curriculum,
                             seed=args.seed, device=device, progress=(rank == 0) and None,
                             checkpoint_path=out / "checkpoint.pt" if out else None,
                             checkpoint_every=max(1, steps // 10))
        res = train_capacity(model, bank, cfg)
        ent = dataset_entropy(profiles, "optimal")
        cap = capacity(res.subject_bits("train_onehop", bank.subjects), ent)
        metrics = {"params": model.num_params(), "d_model": mcfg.d_model, "n_layers": mcfg.n_layers,
                   "steps": steps, "world_size": world, "exposures": res.history["exposures"][-1],
                   "dataset_entropy_bits": ent.one_hop, "capacity_bits": cap,
                   "bits_per_param": cap / model.num_params(), "seconds": res.seconds,
                   "train_onehop_loss": res.final["train_onehop_loss"]}
        if args.two_hop:
            metrics["two_hop_capacity_bits"] = two_hop_capacity(res.subject_bits("train_twohop", bank.subjects),
                                                                ent, "big-hash")
            metrics.update({k: v for k, v in res.final.items() if k.endswith("_loss")})
        metrics["distributed"] = distributed
        if rank == 0:
            if out is not None:
                write_json(out / "metrics.json", metrics)
            print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        return metrics
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
