"""Backbones: the zoo, loading, the pooled classifier and cached features."""

from superalign.models.classifier import Classifier, pool
from superalign.models.features import extract_features
from superalign.models.loading import load_backbone, load_causal_lm, load_tokenizer, model_identity
from superalign.models.zoo import ZOO, ModelSpec, list_models, register_model

__all__ = ["Classifier", "ModelSpec", "ZOO", "extract_features", "list_models", "load_backbone", "load_causal_lm",
           "load_tokenizer", "model_identity", "pool", "register_model"]
