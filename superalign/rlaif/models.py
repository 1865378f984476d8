"""The models one RLAIF run uses (policy, feedback model, PM backbone), loaded once through the model cache."""

from __future__ import annotations

from pathlib import Path

from superalign.models.cache import ModelCache, active_cache
from superalign.models.loading import load_backbone, load_causal_lm
from superalign.rlaif.config import RLAIFConfig
from superalign.rlaif.constitution import load_constitution
from superalign.rlaif.feedback import Labeller
from superalign.rlaif.pm import PreferenceModel


class Models:
    """The chain's models through one :class:`~superalign.models.cache.ModelCache` (by default the active
    scope's: :func:`run_rlaif` opens one, so a run's models are released when it ends). Policies are fresh
    copies of the base model with adapters merged in."""

    def __init__(self, cfg: RLAIFConfig, cache: ModelCache | None = None):
        self.cfg = cfg
        self.cache = cache if cache is not None else active_cache()
        self.pm_features: dict = {}  # shared by every PreferenceModel built here (one backbone, one config)

    def base(self):
        """(causal LM, tokenizer, info) of the policy model; shared, so never trained in place."""
        return self.cache.get(("causal_lm", self.cfg.policy, False, False), lambda: load_causal_lm(self.cfg.policy))

    def policy(self, adapters: tuple[str, ...] = ()):
        """A fresh copy of the policy with ``adapters`` (directories) merged in order."""
        import copy

        from peft import PeftModel

        model, tok, _ = self.base()
        model = copy.deepcopy(model)
        for a in adapters:
            model = PeftModel.from_pretrained(model, a).merge_and_unload()
        model.eval()
        return model, tok

    def feedback(self):
        name = self.cfg.feedback.model
        model, tok, _ = self.cache.get(("causal_lm", name, False, False), lambda: load_causal_lm(name))
        return model, tok

    def pm_backbone(self):
        name = self.cfg.pm.model

        def load():
            model, tok, info = load_backbone(name)
            model.requires_grad_(False)
            return model, tok, info

        return self.cache.get(("backbone", name, True, False), load)

    def labeller(self) -> Labeller:
        model, tok = self.feedback()
        return Labeller(model, tok, load_constitution(self.cfg.constitution), self.cfg.feedback)

    def pm(self) -> PreferenceModel:
        model, tok, info = self.pm_backbone()
        return PreferenceModel(model, tok, info.arch, self.cfg.pm, feature_cache=self.pm_features)


# -- the run ------------------------------------------------------------------------------------


def load_pm(models: Models, head_file: Path) -> PreferenceModel:
    from safetensors.torch import load_file

    from superalign.training.regimes import ProbeHead

    state = load_file(str(head_file))
    pm = models.pm()
    dim = state["linear.weight"].shape[1]
    pm.head = ProbeHead(dim, 1)
    pm.head.load_state_dict(state)
    return pm
