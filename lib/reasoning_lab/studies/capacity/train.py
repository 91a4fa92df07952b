"""The capacity trainer: fresh question batches every step, drawn from pre-tokenized tensors.

There is no fixed dataset and no epoch: each step samples ``batch_size`` questions (1-hop, or 1-hop and
2-hop mixed ``1 : 1/hop_ratio`` as the original's ``order_weights``), and the loss is the answer-token
NLL summed per question and averaged over questions. The steps run in the library's one loop
(:func:`reasoning_lab.train.fit`): AdamW (fused on CPU and CUDA), linear warm-up then cosine decay to
``final_lr`` x ``lr``, gradient clipping, bf16 autocast on CUDA, atomic checkpoints; a rerun with the same
checkpoint resumes and ends where an uninterrupted run ends.

Run as a script for full-size runs, on one device or under ``torchrun`` (DDP: the batch is split over the
ranks, each rank draws its own questions)::

    python -m reasoning_lab.capacity.train --profiles 10000 --budget 1000000 --layers 4 --out runs/cap
    torchrun --nproc_per_node 8 -m reasoning_lab.capacity.train --profiles 25000 --relations 17 ...
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...evaluate import answer_logprobs
from ...train import History, LoopConfig, _dist, fit, learning_rate
from .questions import Batch, QuestionBank


@dataclass
class CapacityConfig:
    steps: int = 1000
    batch_size: int = 1024           # questions per step (all ranks together)
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"         # "cosine" (down to final_lr x lr) or "warmup" (then constant)
    warmup: float = 0.02             # warm-up, as a fraction of the steps ...
    warmup_steps: int = 0            # ... or as a number of steps, when > 0
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

    def loop_config(self) -> LoopConfig:
        """The :class:`~reasoning_lab.train.LoopConfig` of this run: AdamW, warm-up, then cosine decay or
        a constant learning rate."""
        if self.schedule not in ("cosine", "warmup"):
            raise ValueError(f"parameter schedule={self.schedule!r} is not allowed: expected 'cosine' or "
                             "'warmup'")
        warmup = self.warmup_steps or max(1, int(self.warmup * self.steps))
        return LoopConfig(
            steps=self.steps, lr=self.lr, weight_decay=self.weight_decay, betas=tuple(self.betas),
            schedule=self.schedule, warmup_steps=warmup, final_lr=self.final_lr,
            grad_clip=self.grad_clip, eval_every=max(1, self.steps // max(1, self.evals)),
            checkpoint_path=self.checkpoint_path, checkpoint_every=self.checkpoint_every, device=self.device,
            progress=self.progress, desc=self.desc)

    def lr_at(self, step: int) -> float:
        return learning_rate(self.loop_config(), step)


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


def question_losses(model: nn.Module, batch: Batch, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per question: summed answer NLL (nats) and exact match of the greedy answer (teacher-forced), from
    :func:`reasoning_lab.evaluate.answer_logprobs`."""
    lp = answer_logprobs(model, (batch.tokens, batch.answer), chunk)
    return -lp["whole"], lp["correct"]


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


def subject_bits(res: History, split: str, subjects) -> dict[str, float]:
    """Final per-subject loss (bits) of ``split`` (e.g. ``"train_onehop"``), for the subjects it has."""
    return {s: res.final[f"{split}_bits_{s}"] for s in subjects if f"{split}_bits_{s}" in res.final}


class QuestionBatches:
    """Fresh questions every step: ``local_batch`` per rank, 2-hop ones at rate ``p2`` once ``phase2`` is
    on (at once without a curriculum). Each rank draws from its own generator; the checkpointed state
    holds every rank's generator and the exposure counts."""

    def __init__(self, bank: QuestionBank, local_batch: int, p2: float, phase2: bool, seed: int, device):
        self.dist, self.rank, self.world = _dist()
        self.bank, self.local_batch, self.p2, self.phase2, self.device = bank, local_batch, p2, phase2, device
        self.generator = torch.Generator().manual_seed(seed * 1000003 + self.rank)
        self.seen = {"one": 0.0, "two": 0.0}

    def batch(self, step: int) -> Batch:
        frac2 = self.p2 if self.phase2 else 0.0
        batch = self.bank.sample(self.local_batch, frac2, self.generator).to(self.device)
        k2 = int(round(self.local_batch * frac2))
        self.seen["one"] += (self.local_batch - k2) * self.world
        self.seen["two"] += k2 * self.world
        return batch

    def state_dict(self) -> dict:
        gens = [self.generator.get_state()]
        if self.dist is not None:
            gens = [None] * self.world
            self.dist.all_gather_object(gens, self.generator.get_state())
        return {"generators": gens, "phase2": self.phase2, "seen": dict(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generators"][self.rank].cpu())
        self.phase2, self.seen = state["phase2"], dict(state["seen"])


def train_capacity(model: nn.Module, bank: QuestionBank, cfg: CapacityConfig) -> History:
    """Train ``model`` in place on questions from ``bank`` with :func:`reasoning_lab.train.fit`; returns the
    evaluation history (``final``: the last evaluation, ``seconds``: training time)."""
    dist, _rank, world = _dist()
    device = torch.device(cfg.device)
    model.to(device)
    loss_fn: nn.Module = AnswerLoss(model)
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        loss_fn = DDP(loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    sets = bank.eval_sets(cfg.eval_questions, cfg.seed, two_hop=cfg.two_hop)
    p2 = 1.0 / (1.0 + cfg.hop_ratio) if cfg.two_hop else 0.0
    batches = QuestionBatches(bank, max(1, cfg.batch_size // world), p2, not cfg.curriculum, cfg.seed, device)
    n_facts = bank.n * bank.K
    history = History()

    def objective(_forward, batch: Batch):
        return loss_fn(batch.tokens, batch.answer), 1

    def evaluate_now(done: int) -> dict:
        ev = evaluate(model, sets, bank.subjects)
        if not batches.phase2 and ev["train_onehop_loss"] < 1.0:
            batches.phase2 = True
        return {"step": done, "exposures": batches.seen["one"] / n_facts,
                "two_hop_questions": batches.seen["two"], "seconds": history.seconds, **ev}

    return fit(model, batches, objective, cfg.loop_config(), evaluate=evaluate_now, histories=[history])[0]


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
        cap = capacity(subject_bits(res, "train_onehop", bank.subjects), ent)
        metrics = {"params": model.num_params(), "d_model": mcfg.d_model, "n_layers": mcfg.n_layers,
                   "steps": steps, "world_size": world, "exposures": res["exposures"][-1],
                   "dataset_entropy_bits": ent.one_hop, "capacity_bits": cap,
                   "bits_per_param": cap / model.num_params(), "seconds": res.seconds,
                   "train_onehop_loss": res.final["train_onehop_loss"]}
        if args.two_hop:
            metrics["two_hop_capacity_bits"] = two_hop_capacity(subject_bits(res, "train_twohop", bank.subjects),
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
