"""Reasoning Lab: the library behind the book.

Core modules: ``model`` (the transformer), ``stacked`` (seeds as one batched model), ``data``, ``train``
(the one training loop, :func:`fit`, its :class:`LoopConfig` and the :class:`Trained` result of a
study's run), ``epochs`` (epochs over fixed sentences, the seeds of a chapter side by side),
``evaluate``, ``plots``, ``io`` and ``devices``. ``experiments`` holds the registry, the parameter rules, the in-kernel session,
the papermill runner and the command line; ``studies`` holds one folder per study of the book.
"""
from .lazy import exports

# Everything below loads on first use (see lazy.py): `import reasoning_lab` alone imports no PyTorch.
__getattr__, __dir__ = exports(__name__, {
    "data": ("SeqData",), "devices": ("resolve_device", "seed_everything"), "evaluate": ("answer_logprobs",),
    "experiments": ("params",), "experiments.session": ("Run", "start"),
    "model": ("ModelConfig", "Transformer", "count_params", "model_from_params"), "stacked": ("build_models",),
    "train": ("History", "LoopConfig", "Trained", "fit"), "epochs": ("seed_runs", "train_seeds"),
})

__all__ = ["ModelConfig", "Transformer", "count_params", "Run", "start", "resolve_device", "seed_everything",
           "SeqData", "LoopConfig", "History", "Trained", "fit", "model_from_params", "answer_logprobs",
           "seed_runs", "train_seeds", "build_models", "data", "devices", "epochs", "evaluate", "experiments",
           "io", "model", "params", "plots", "stacked", "train"]
__version__ = "0.1.0"
