"""Load backbones and tokenizers: zoo names, Hugging Face ids, local directories, or objects.

Zoo names resolve to the offline copy when its asset is installed (GGUF weights are dequantised
once per machine and cached as safetensors), else to the Hugging Face id. Anything else goes to
``from_pretrained`` unchanged, so a hub id or a local directory works as it does in transformers.
``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from superalign.errors import UnknownNameError
from superalign.models.zoo import ZOO, ModelSpec
from superalign.store.store import superalign_home

log = logging.getLogger("superalign.models")


@dataclass
class ModelInfo:
    """What a loaded backbone is: used in stage keys and reports."""

    name: str  # what the user asked for
    source: str  # the path or hub id it was loaded from
    arch: str  # encoder | decoder
    params_m: float

    def key(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source}


def resolve(name: str) -> tuple[str, ModelSpec | None]:
    """Where to load ``name`` from: (path-or-hub-id, zoo spec or None)."""
    name = name.removeprefix("hf:") if name.startswith("hf:") else name
    spec = ZOO.get(name)
    if spec is None:
        if Path(name).expanduser().exists() or "/" in name:
            return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name, None
        raise UnknownNameError(
            "model", name, list(ZOO),
            "use a zoo name (superalign models list), a Hugging Face id such as owner/name, or a local directory",
        )
    if spec.random_init:
        return f"random:{spec.name}", spec
    if spec.asset and os.environ.get("SUPERALIGN_PREFER_HUB") != "1":
        from superalign.assets import locate

        if locate(spec.asset) is not None:
            return str(offline_dir(spec)), spec
    return spec.hf_id, spec


_TRUE = {"1", "on", "yes", "true"}


def hub_offline(*extra_vars: str) -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, read now)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                                         *extra_vars))


def hub_cached(repo_id: str, repo_type: str = "model") -> bool:
    """Whether ``repo_id`` has a downloaded snapshot in the local Hugging Face hub cache."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def hub_exists(repo_id: str, repo_type: str = "model") -> bool | None:
    """Whether the hub has ``repo_id`` (``None``: the hub could not be asked, e.g. no network)."""
    try:
        from huggingface_hub import HfApi

        return bool(HfApi().repo_exists(repo_id, repo_type=repo_type))
    except Exception as exc:  # network errors, bad ids: the caller falls back on the cache
        log.debug("could not ask the hub about %s: %s", repo_id, exc)
        return None


def check_hub_id(repo_id: str, field: str, repo_type: str = "model", offline_vars: tuple[str, ...] = ()) -> None:
    """Raise :class:`UnknownNameError` unless ``repo_id`` can be loaded: offline it must be in the local
    cache; online it must exist on the hub (or, when the hub cannot be reached, be cached)."""
    what = "model" if repo_type == "model" else "data set"
    if hub_offline(*offline_vars):
        if hub_cached(repo_id, repo_type):
            return
        instead = ("give a local directory, or use an installed zoo name (superalign models list)"
                   if repo_type == "model" else "give a local .csv/.jsonl/.parquet file, or a registered task "
                   "(superalign tasks list)")
        raise UnknownNameError(field, repo_id, [] if repo_type != "model" else list(ZOO),
                               f"the hub is off ({'/'.join(('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', *offline_vars))}) "
                               f"and '{repo_id}' is not in the local cache ({_cache_dir()}): download the {what} once "
                               f"with the hub on, {instead}")
    exists = hub_exists(repo_id, repo_type)
    if exists or (exists is None and hub_cached(repo_id, repo_type)):
        return
    problem = "is not on the Hugging Face hub" if exists is False else "cannot be checked (the hub is unreachable) " \
                                                                    "and is not in the local cache"
    instead = ("give a local directory, or use a zoo name (superalign models list)" if repo_type == "model"
               else "give a local .csv/.jsonl/.parquet file, or a registered task (superalign tasks list)")
    raise UnknownNameError(field, repo_id, [] if repo_type != "model" else list(ZOO),
                           f"'{repo_id}' {problem}: check the spelling (owner/name), {instead}; set HF_HUB_OFFLINE=1 "
                           "to use cached copies only")


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def check_model(name: str, field: str = "model") -> None:
    """Check, without loading anything, that ``name`` can be loaded; raise an error naming ``field`` and the fix.

    A zoo name is fine when random-initialised or when its offline asset is installed (else its hub
    id is checked); a local directory must hold a ``config.json``; anything else is a hub id, checked
    in the local cache when the hub is off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) and on the
    hub otherwise.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownNameError(field, str(name), list(ZOO), "give a zoo name, a Hugging Face id or a local directory")
    try:
        source, spec = resolve(name)
    except UnknownNameError as exc:  # a bare unknown name: say which field holds it
        raise UnknownNameError(field, name, exc.known, str(exc).split("Fix: ", 1)[-1]) from None
    if spec is not None and spec.random_init:
        return
    if spec is not None and source != spec.hf_id:
        return  # an installed offline asset
    path = Path(source).expanduser()
    if not path.exists() and source.startswith((".", "/", "~")):
        raise UnknownNameError(field, name, list(ZOO), f"directory '{path}' does not exist: give an existing model "
                               "directory, a zoo name (superalign models list) or a Hugging Face id owner/name")
    if path.exists():
        if path.is_dir() and (path / "config.json").exists():
            return
        raise UnknownNameError(field, name, list(ZOO),
                               f"'{path}' exists but is not a model directory (no config.json): point at a directory "
                               "written by save_pretrained")
    if spec is not None and spec.asset:
        try:
            check_hub_id(source, field)
        except UnknownNameError:
            raise UnknownNameError(field, name, list(ZOO),
                                   f"its offline weights are not installed and its hub id '{spec.hf_id}' cannot be "
                                   f"loaded here: run `superalign assets install {spec.asset}`") from None
        return
    check_hub_id(source, field)


def config_names(tree: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every (field, kind, name) a config dump names: kind ``model`` for keys ``model``, ``policy`` and
    ``*_model``; ``task`` for ``task``; ``file``/``dataset`` for a ``{source: file|hub, path: ...}`` pair."""
    out: list[tuple[str, str, str]] = []
    if isinstance(tree, dict):
        if tree.get("source") in ("file", "hub") and isinstance(tree.get("path"), str):
            out.append((f"{prefix}path", "file" if tree["source"] == "file" else "dataset", tree["path"]))
        for key, value in tree.items():
            field = f"{prefix}{key}"
            if isinstance(value, str):
                if key in ("model", "policy") or str(key).endswith("_model"):
                    out.append((field, "model", value))
                elif key == "task":
                    out.append((field, "task", value))
            else:
                out += config_names(value, field + ".")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            out += config_names(value, f"{prefix.rstrip('.')}[{i}].")
    return out


def check_names(config: Any, only: list[str] | None = None) -> None:
    """Check every model, task and data file a config names before any stage runs.

    ``config`` is a pydantic config or its dump; ``only`` restricts the check to those top-level
    sections (e.g. the measurements an oversight run will run) plus top-level string fields.
    Raises the first :class:`~superalign.errors.SuperalignError` found, naming the field and the fix.
    """
    from superalign.data.registry import check_task

    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    if only is not None:
        data = {k: v for k, v in data.items() if k in only or not isinstance(v, (dict, list))}
    seen: set[tuple[str, str]] = set()
    for field, kind, name in config_names(data):
        if (kind, name) in seen:
            continue
        seen.add((kind, name))
        if kind == "model":
            check_model(name, field)
        elif kind == "task":
            check_task(name, field)
        elif kind == "file":
            if not Path(name).expanduser().is_file():
                from superalign.errors import DataError

                raise DataError(field, f"file '{name}' does not exist", "give the path of an existing JSONL/CSV/Parquet "
                                "file with prompt, chosen and rejected columns")
        else:
            check_task(f"hf:{name.removeprefix('hf:')}", field)


def model_identity(name: str) -> dict[str, Any]:
    """What identifies a model's weights in a stage key, without loading them.

    Offline copies are named by their registry package (the same on every machine), hub models by
    id, local directories by path and the size and mtime of their files.
    """
    source, spec = resolve(name)
    if spec is not None and spec.random_init:
        return {"name": name, "origin": f"random-init:{spec.config}"}
    if spec is not None and source != spec.hf_id:
        from superalign.assets import ASSETS

        return {"name": name, "origin": f"asset:{ASSETS[spec.asset or ''].package}"}
    path = Path(source)
    if path.exists():
        files = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in path.iterdir() if f.is_file())
        return {"name": name, "origin": f"dir:{path.resolve()}", "files": files}
    return {"name": name, "origin": f"hub:{source}"}


def model_notes(names: list[str]) -> list[str]:
    """Caveats a report must state about the weights used (e.g. dequantised 4-bit copies)."""
    notes = []
    for name in dict.fromkeys(names):
        source, spec = resolve(name)
        if spec is not None and spec.gguf and source != spec.hf_id:
            notes.append(f"{name}: offline weights shipped as 4-bit GGUF and dequantised to fp32, so they carry "
                         f"quantisation error relative to {spec.hf_id}.")
        if spec is not None and spec.random_init:
            notes.append(f"{name}: randomly initialised (no pretrained weights); for tests only.")
    return notes


def offline_dir(spec: ModelSpec) -> Path:
    """A ``from_pretrained``-ready directory for a zoo model's offline asset."""
    from superalign.assets import require

    asset_path = require(spec.asset or "", f"model '{spec.name}'")
    if not spec.gguf:
        return asset_path
    target = superalign_home() / "models" / spec.name
    if (target / "config.json").exists():
        return target
    _convert_gguf(asset_path, target)
    return target


def _convert_gguf(gguf_file: Path, target: Path) -> None:
    """Dequantise a GGUF file through transformers and save fp32 safetensors (once per machine).

    ``save_pretrained`` refuses a GGUF-loaded model, so the model is rebuilt from its config
    without ``quantization_config`` and the dequantised state dict is loaded into it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s once (cached in %s)", gguf_file.name, target)
    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict(), strict=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.tmp")
    clean.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"dequantised from {gguf_file.name} (4-bit GGUF) by superalign\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def byte_tokenizer():
    """A 259-token byte-level tokenizer built in-process (for random-initialised test models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


# A minimal chat template for the random-initialised test models (real chat models bring their own).
TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    source, spec = resolve(name)
    if spec is not None and spec.random_init:
        tok = byte_tokenizer()
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def _random_config(spec: ModelSpec, vocab_size: int):
    from transformers import AutoConfig

    cfg = dict(spec.config or {})
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2, **cfg)


def _info(name: str, source: str, spec: ModelSpec | None, model: torch.nn.Module, arch: str) -> ModelInfo:
    params = spec.params_m if spec else sum(p.numel() for p in model.parameters()) / 1e6
    return ModelInfo(name=name, source=source, arch=arch, params_m=round(params, 1))


def _arch_of(config) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "encoder"
    archs = " ".join(getattr(config, "architectures", None) or []).lower()
    if "causallm" in archs or "lmhead" in archs:
        return "decoder"
    return "encoder" if config.model_type in {"bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra",
                                              "xlm-roberta", "mpnet", "albert", "modernbert"} else "decoder"


def load_backbone(name: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False, seed: int = 0):
    """(hidden-state model without an LM head, tokenizer, ModelInfo) for ``name``.

    Random-initialised zoo models are built from their config with ``seed``.
    """
    from transformers import AutoModel

    source, spec = resolve(name)
    tok = load_tokenizer(name, trust_remote_code=trust_remote_code)
    if spec is not None and spec.random_init:
        torch.manual_seed(seed)
        model = AutoModel.from_config(_random_config(spec, len(tok)), dtype=dtype)
        arch = spec.arch
    else:
        model = AutoModel.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
        arch = spec.arch if spec else _arch_of(model.config)
    model.eval()
    return model, tok, _info(name, source, spec, model, arch)


def load_causal_lm(name: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False, seed: int = 0):
    """(causal LM with its head, tokenizer, ModelInfo): for prompting, generation and feedback."""
    from transformers import AutoModelForCausalLM

    source, spec = resolve(name)
    if spec is not None and spec.arch == "encoder":
        raise UnknownNameError("model", name, [s.name for s in ZOO.values() if s.arch == "decoder"],
                               "this step needs a causal LM (a decoder); pick one of the decoders listed")
    tok = load_tokenizer(name, trust_remote_code=trust_remote_code)
    if spec is not None and spec.random_init:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_random_config(spec, len(tok)), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tok, _info(name, source, spec, model, "decoder")
