"""Part III: knowledge capacity — profiles, questions, entropy and capacity in bits, the trainer, probes."""
from .entropy import (DatasetEntropy, capacity, capacity_by_subject, dataset_entropy, per_hop_loss, selection_bits,
                      two_hop_capacity, two_hop_capacity_by_subject)
from .profiles import Profiles, generate_profiles, load_profiles_jsonl, save_profiles_jsonl
from .questions import Batch, QuestionBank
from .sizing import config_for_budget, formula_count, llama_config, original_architecture
from .vocab import ATTRIBUTES, RELATIONS, Vocab, make_vocab


def __getattr__(name):
    # the trainer is imported on first use, so ``python -m reasoning_lab.studies.capacity.train`` runs it cleanly
    if name in ("CapacityConfig", "subject_bits", "train_capacity"):
        from . import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
