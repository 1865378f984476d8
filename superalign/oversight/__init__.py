"""Oversight measurements: easy-to-hard generalization, W2S reward modeling, the discriminator–critique
gap, targeted-perturbation trials, reward over-optimization, automated interpretability, and a
planted misalignment to test them all. Each registers itself (:mod:`superalign.oversight.registry`);
``run_oversight`` runs several as one experiment. Their figures are in :mod:`superalign.report.plots_oversight`."""

import importlib
from typing import Any

_EXPORTS = {  # name -> module: imported on first use, so `superalign.oversight.registry` stays light
    "AutoInterpConfig": "autointerp",
    "CritiqueGapConfig": "critique",
    "EasyToHardConfig": "easy_to_hard",
    "Explainer": "autointerp",
    "Flaw": "perturb",
    "Item": "perturb",
    "ItemFamily": "perturb",
    "KeywordSimulator": "autointerp",
    "LMExplainer": "autointerp",
    "LMSimulator": "autointerp",
    "MeasurementSpec": "registry",
    "MisalignedConfig": "misaligned",
    "OveroptConfig": "overopt",
    "OversightConfig": "pipeline",
    "OversightResult": "pipeline",
    "Perturbation": "perturb",
    "PerturbationTrialConfig": "perturbation_trial",
    "Simulator": "autointerp",
    "W2SRewardConfig": "w2s_reward",
    "best_of_n_probs": "overopt",
    "build_pairs": "perturb",
    "find_overoptimization": "overopt",
    "kl_regularised_policy": "overopt",
    "layer_report_sections": "autointerp",
    "list_measurements": "registry",
    "overopt_curves": "overopt",
    "record_activations": "autointerp",
    "register_family": "perturb",
    "register_measurement": "registry",
    "register_perturbation": "perturb",
    "run_autointerp": "autointerp",
    "run_critique_gap": "critique",
    "run_easy_to_hard": "easy_to_hard",
    "run_misaligned": "misaligned",
    "run_overopt": "overopt",
    "run_oversight": "pipeline",
    "run_perturbation_trial": "perturbation_trial",
    "run_w2s_reward": "w2s_reward",
    "write_layer_reports": "autointerp",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"superalign.oversight.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AutoInterpConfig", "CritiqueGapConfig", "EasyToHardConfig", "Explainer", "Flaw", "Item", "ItemFamily",
    "KeywordSimulator", "LMExplainer", "LMSimulator", "MeasurementSpec", "MisalignedConfig", "OveroptConfig",
    "OversightConfig", "OversightResult", "Perturbation", "PerturbationTrialConfig", "Simulator", "W2SRewardConfig",
    "best_of_n_probs", "build_pairs", "find_overoptimization", "kl_regularised_policy", "layer_report_sections",
    "list_measurements", "overopt_curves", "record_activations", "register_family", "register_measurement",
    "register_perturbation", "run_autointerp", "run_critique_gap", "run_easy_to_hard", "run_misaligned", "run_overopt",
    "run_oversight", "run_perturbation_trial", "run_w2s_reward", "write_layer_reports",
]
