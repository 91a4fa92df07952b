"""Reasoning Lab: the library behind the book (data, models, training, theory, metrics, plots, CLI)."""
from . import experiments, params, plots, runtime, training
from .ensemble import build_models, train_seeds
from .models import ModelConfig, Transformer, count_params, model_from_params
from .notebook import Run, start
from .runtime import resolve_device, seed_everything
from .training import SeqData, TrainConfig, config_from_params, evaluate, train

__all__ = ["ModelConfig", "Transformer", "count_params", "Run", "start", "resolve_device", "seed_everything",
           "SeqData", "TrainConfig", "config_from_params", "model_from_params", "evaluate", "train", "train_seeds", "build_models", "experiments", "params", "plots", "runtime",
           "training"]
__version__ = "0.1.0"
