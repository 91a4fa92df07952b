"""Headroom of the capacity question stream: questions/s it produces vs questions/s the model trains on.

    python bench/bench_capacity_stream.py [--seconds 4] [--profiles 2000] [--budget 100000] [--layers 2]

The trainer draws a fresh batch from ``QuestionBank.sample`` (pre-tokenized integer tensors) before every
step, in the training process. If producing a batch took a noticeable share of a step, the stream would
slow training down; the target is at least 10x headroom: the stream produces questions at least ten
times as fast as the default capacity model (the trainer's defaults: 2,000 profiles, 100k-parameter
two-layer Llama-style model, 1,024 questions per step) consumes them in training steps (forward, backward,
clipping, AdamW). Both are measured in this process, interleaved, on the same number of torch threads
(1 by default). The 1-hop + 2-hop mix (held-out sets rejected on the fly) is measured too, and the ratio
uses the slower of the two streams.
Prints one ``RESULT {json}`` line for bench/run_all.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402

from reasoning_lab.studies.capacity import QuestionBank, config_for_budget, generate_profiles, make_vocab  # noqa: E402
from reasoning_lab.studies.capacity.train import BETAS, GRAD_CLIP, AnswerLoss  # noqa: E402
from reasoning_lab.model import Transformer
from _timing import rate  # noqa: E402  (bench/ is on sys.path when a script runs)

TARGET = 10.0


# The model and data this benchmark has always measured: 2,000 profiles of 4 relations, a 100,000-parameter
# 2-layer model, batches of 1,024 questions (the capacity chapter's cpu-full scale), AdamW at 3e-3.
DEFAULTS = SimpleNamespace(profiles=2000, relations=4, budget=100_000, layers=2, batch_size=1024, hop_ratio=0.1,
                           first_names=64, last_names=128, values=64, years=100, lr=3e-3, weight_decay=0.1)


def main(argv=None) -> int:
    d = DEFAULTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="time per measurement (each is done twice)")
    ap.add_argument("--profiles", type=int, default=d.profiles)
    ap.add_argument("--relations", type=int, default=d.relations)
    ap.add_argument("--budget", type=int, default=d.budget)
    ap.add_argument("--layers", type=int, default=d.layers)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--hop-ratio", type=float, default=d.hop_ratio)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (1: on a shared machine more threads mostly measure contention)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    vocab = make_vocab(d.first_names, d.last_names, d.values, d.values, d.values, d.years, args.relations)
    bank = QuestionBank(generate_profiles(args.profiles, vocab, seed=0), seed=0)
    torch.manual_seed(0)
    model = Transformer(config_for_budget(args.budget, args.layers, len(vocab)))
    loss_fn = AnswerLoss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=d.lr, betas=BETAS, weight_decay=d.weight_decay)
    g = torch.Generator().manual_seed(0)
    B = args.batch_size
    p2 = 1.0 / (1.0 + args.hop_ratio)          # 2-hop share of a mixed batch (the original's weights)
    batches = [bank.sample(B, 0.0, g) for _ in range(4)]

    def stream_one_hop():
        bank.sample(B, 0.0, g)
        return B

    def stream_mixed():
        bank.sample(B, p2, g)
        return B

    it = iter(range(1 << 30))

    def train_step():
        b = batches[next(it) % len(batches)]
        loss = loss_fn(b.tokens, b.answer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        return B

    train_step(), stream_one_hop(), stream_mixed()                 # warm-up
    s1, s2, tr = [], [], []
    for _ in range(2):                                              # interleaved: same machine load
        s1.append(rate(stream_one_hop, args.seconds / 2))
        s2.append(rate(stream_mixed, args.seconds / 2))
        tr.append(rate(train_step, args.seconds / 2))
    one, mixed, train = max(s1), max(s2), max(tr)
    ratio = min(one, mixed) / train
    print(f"model: {model.num_params():,} parameters, {args.layers} layers; {args.profiles} profiles; "
          f"batch {B} questions; torch threads {torch.get_num_threads()}")
    print(f"stream, 1-hop questions      : {one:12,.0f} questions/s")
    print(f"stream, 1-hop + 2-hop mix    : {mixed:12,.0f} questions/s  (2-hop share {p2:.2f})")
    print(f"training steps consume       : {train:12,.0f} questions/s")
    print(f"ratio (slower stream / train): {ratio:12.1f}x   (target >= {TARGET:g}x)")
    print("RESULT " + json.dumps({
        "name": "capacity stream", "ratio": round(ratio, 2), "target": f">= {TARGET:g}x",
        "pass": ratio >= TARGET, "unit": "questions/s",
        "detail": f"stream {min(one, mixed):,.0f} q/s vs training {train:,.0f} q/s "
                  f"({model.num_params():,}-parameter model, batch {B})"}))
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
