"""Oversight measurements: easy-to-hard generalization, W2S reward modeling, the discriminator–critique
gap, targeted-perturbation trials, reward over-optimization, automated interpretability, and a
planted misalignment to test them all. ``run_oversight`` runs several as one experiment."""

from superalign.oversight.autointerp import (
                                             AutoInterpConfig,
                                             Explainer,
                                             KeywordSimulator,
                                             LMExplainer,
                                             LMSimulator,
                                             Simulator,
                                             layer_report_sections,
                                             record_activations,
                                             run_autointerp,
                                             write_layer_reports,
)
from superalign.oversight.critique import (
                                             CritiqueGapConfig,
                                             PerturbationTrialConfig,
                                             critique_gap_plot,
                                             perturbation_trial_plot,
                                             run_critique_gap,
                                             run_perturbation_trial,
)
from superalign.oversight.easy_to_hard import EasyToHardConfig, run_easy_to_hard
from superalign.oversight.misaligned import MisalignedConfig, run_misaligned
from superalign.oversight.overopt import (
                                             OveroptConfig,
                                             best_of_n_probs,
                                             find_overoptimization,
                                             kl_regularised_policy,
                                             overopt_curves,
                                             overopt_plot,
                                             run_overopt,
)
from superalign.oversight.perturb import (
                                             Flaw,
                                             Item,
                                             ItemFamily,
                                             Perturbation,
                                             build_pairs,
                                             register_family,
                                             register_perturbation,
)
from superalign.oversight.pipeline import OversightConfig, OversightResult, run_oversight
from superalign.oversight.w2s_reward import W2SRewardConfig, run_w2s_reward

__all__ = [
    "AutoInterpConfig", "CritiqueGapConfig", "EasyToHardConfig", "Explainer", "Flaw", "Item", "ItemFamily",
    "KeywordSimulator", "LMExplainer", "LMSimulator", "MisalignedConfig", "OveroptConfig", "OversightConfig",
    "OversightResult", "Perturbation", "PerturbationTrialConfig", "Simulator", "W2SRewardConfig", "best_of_n_probs",
    "build_pairs", "critique_gap_plot", "find_overoptimization", "kl_regularised_policy", "layer_report_sections",
    "overopt_curves", "overopt_plot", "perturbation_trial_plot", "record_activations", "register_family",
    "register_perturbation", "run_autointerp", "run_critique_gap", "run_easy_to_hard", "run_misaligned", "run_overopt",
    "run_oversight", "run_perturbation_trial", "run_w2s_reward", "write_layer_reports",
]
