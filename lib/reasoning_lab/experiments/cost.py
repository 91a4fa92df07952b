"""What a run will cost, estimated before it starts: peak memory and training arithmetic.

Each experiment may declare ``cost(params) -> Cost`` (arithmetic on its parameters, no PyTorch). Before
any work, :func:`check_fits` refuses, with one line, a run whose memory estimate exceeds what the device
has, and on a CPU a run whose time estimate is an hour or more unless it is asked for explicitly
(``--allow-long``): such a run (a ``paper`` preset, typically) is meant for a GPU box.

The estimates are deliberately simple: weights, gradients and the two AdamW moments in fp32 (16 bytes a
parameter), activations of one step at about a dozen floats per token, layer and unit of width (plus the
logits), and ``6 x parameters x tokens`` floating-point operations per step at an assumed
:data:`CPU_FLOPS`. They are meant to catch runs that are hopeless by a wide margin, not to predict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CPU_FLOPS = 1e11            # an optimistic CPU rate (a few cores of AVX2/AVX-512 at these model shapes)
LONG_SECONDS = 3600.0       # a CPU run estimated at this or more needs --allow-long
BYTES_PER_PARAM = 16        # fp32 weights, gradients, AdamW's two moments


@dataclass(frozen=True)
class Cost:
    memory_bytes: float     # peak while training
    flops: float            # the whole run's training arithmetic
    what: str = ""          # what dominates, in a few words (for the refusal line)


def transformer(params: float, seeds: int, tokens_per_step: float, steps: float, layers: int, width: int,
                vocab: int, what: str = "") -> Cost:
    """A decoder trained with AdamW: ``params`` per model, ``seeds`` models side by side, ``tokens_per_step``
    tokens a model sees each step (batch x sequence), ``steps`` steps."""
    state = BYTES_PER_PARAM * params * seeds
    activations = 4.0 * seeds * tokens_per_step * (12 * layers * width + 2 * vocab)
    return Cost(state + activations, 6.0 * params * seeds * tokens_per_step * steps, what)


def gpt_params(layers: int, width: int, vocab: int, positions: int, tied: bool = False) -> float:
    """Parameters of the chapters' GPT (12 d^2 per block, embeddings, positions, untied output layer)."""
    return 12.0 * layers * width ** 2 + vocab * width * (1 if tied else 2) + positions * width


def sentence_run(p: dict, n_rows: int, seq_len: int, vocab: int) -> Cost:
    """A chapter's transformer trained ``p["epochs"]`` epochs over ``n_rows`` sentences of ``seq_len``."""
    params = gpt_params(p["n_layers"], p["embed_dim"], vocab, p.get("max_len") or seq_len,
                        p.get("tie_embeddings", False))
    steps = max(1, p.get("epochs") or 100) * math.ceil(n_rows / p["batch_size"])
    return transformer(params, p.get("seeds", 1), min(n_rows, p["batch_size"]) * seq_len, steps,
                       p["n_layers"], p["embed_dim"], vocab,
                       f"{p.get('seeds', 1)} x {params / 1e6:,.1f}M parameters, {steps:,} steps")


def _gib(x: float) -> str:
    return f"{x / 2 ** 30:,.1f} GiB"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} hours" if seconds >= 3600 else f"{seconds / 60:,.0f} minutes"


def available_memory(device: str) -> tuple[float, str]:
    """Bytes the run may use on ``device`` (``cpu``, ``cuda``, ``mps``) and what that is, in words."""
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        return float(total), f"the GPU's {_gib(total)}"
    import psutil

    mem = psutil.virtual_memory()
    return float(mem.available), f"the {_gib(mem.available)} of memory available"


def resolved_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def check_fits(exp, params: dict, allow_long: bool = False) -> Cost | None:
    """Refuse (``ValueError``, one line) a run that cannot fit in the device's memory, or one estimated at
    an hour or more on a CPU without ``allow_long``. Returns the estimate (None: the experiment declares
    none)."""
    if exp.cost is None:
        return None
    cost = exp.cost(params)
    device = resolved_device(params.get("device", "auto"))
    have, where = available_memory(device)
    if cost.memory_bytes > have:
        raise ValueError(f"{exp.name}: this run needs about {_gib(cost.memory_bytes)} ({cost.what}), more than "
                         f"{where}; choose smaller sizes")
    if device == "cpu" and not allow_long:
        seconds = cost.flops / CPU_FLOPS
        if seconds >= LONG_SECONDS:
            raise ValueError(f"{exp.name}: this run is estimated at {_duration(seconds)} or more on a CPU "
                             f"({cost.what}); run it on a GPU (-p device=cuda), or pass --allow-long to "
                             "start it here anyway")
    return cost
