"""Part III: knowledge capacity — profiles, questions, entropy and capacity in bits, the trainer, probes."""
from ...lazy import exports

# loaded on first use: the registry reads experiment.py without them
__getattr__, __dir__ = exports(__name__, {
    "entropy": ("DatasetEntropy", "capacity", "capacity_by_subject", "dataset_entropy", "per_hop_loss",
                "selection_bits", "two_hop_capacity", "two_hop_capacity_by_subject"),
    "profiles": ("Profiles", "generate_profiles", "load_profiles_jsonl", "save_profiles_jsonl"),
    "questions": ("Batch", "QuestionBank"),
    "sizing": ("config_for_budget", "formula_count", "llama_config", "original_architecture"),
    "vocab": ("ATTRIBUTES", "RELATIONS", "Vocab", "make_vocab"),
    "train": ("subject_bits", "train_capacity"),
})
