"""The GPU path: the same W2S code on CUDA, with bf16 autocast chosen by `mixed_precision: auto`.

No weights travel to a GPU machine that cannot reach a hub, so the models here are
random-initialised at the real sizes of the offline zoo (MiniLM-L6 and SmolLM2-135M dimensions,
plus a SmolLM2-360M-sized decoder) on a synthetic lexical task: throughput and memory figures are
real, accuracies are not meaningful. Prints, in one run:

  1. training throughput (examples/s) per model × regime × precision, and peak GPU memory;
  2. a complete W2S run (3 seeds, naive and aux-confidence) with its wall time and stage counts.

    python benchmarks/bench_gpu.py [--n 4096] [--max-length 128] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = {
    "bert-22m-random": {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                        "intermediate_size": 1536, "max_position_embeddings": 512},
    "llama-135m-random": {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                          "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 2048},
    "llama-360m-random": {"model_type": "llama", "hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                          "num_key_value_heads": 5, "intermediate_size": 2560, "max_position_embeddings": 2048},
}


def register() -> None:
    from superalign.models.zoo import ModelSpec, register_model

    for name, cfg in SIZES.items():
        arch = "encoder" if cfg["model_type"] == "bert" else "decoder"
        register_model(ModelSpec(name=name, hf_id="", params_m=0, arch=arch, family=cfg["model_type"],
                                 random_init=True, config=cfg))


def synthetic_csv(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pos, neg = ["good", "great", "lovely", "superb"], ["bad", "awful", "dull", "poor"]
    filler = "the a movie plot was and very it film story scene actor music long short".split()
    with open(path, "w") as f:
        f.write("text,label\n")
        for _ in range(n):
            y = rng.randint(0, 1)
            words = [rng.choice(filler) for _ in range(rng.randint(8, 20))]
            words.insert(rng.randint(0, len(words)), rng.choice(pos if y else neg))
            if rng.random() < 0.15:
                y = 1 - y
            f.write(" ".join(words) + f",{y}\n")


def throughput(n: int, max_length: int) -> list[dict]:
    from superalign.data import load_task
    from superalign.models import load_backbone
    from superalign.models.classifier import encode
    from superalign.training import TokenBatcher, TrainConfig, build_classifier, fit
    from superalign.training.prefix import PrefixBatcher, PrefixClassifier, compute_prefix_states
    from superalign.training.regimes import copy_for_regime, transformer_blocks

    tmp = Path(tempfile.mkdtemp())
    synthetic_csv(tmp / "t.csv", n)
    task = load_task(str(tmp / "t.csv"))
    onehot = np.eye(2, dtype=np.float32)[task.labels]
    idx = np.arange(len(task))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in ("llama-135m-random", "llama-360m-random"):
        backbone, tok, info = load_backbone(name)
        backbone.requires_grad_(False)
        backbone.to(device)
        enc = encode(tok, task.inputs(), max_length)
        for regime in ("full", "lora", "last_k"):
            for precision in ("no", "bf16"):
                if precision == "bf16" and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
                    continue
                cfg = TrainConfig(regime=regime, epochs=1, batch_size=32, lr=1e-4, max_length=max_length,
                                  mixed_precision=precision, last_k=2)
                clf = build_classifier(copy_for_regime(backbone, cfg), 2, cfg, info.arch)
                module, batcher, extra = clf, TokenBatcher(enc, tok.pad_token_id), 0.0
                if regime == "last_k":
                    start = len(transformer_blocks(backbone)) - cfg.last_k
                    t = time.perf_counter()
                    states = compute_prefix_states(backbone, enc, tok.pad_token_id, start, 64, device=device)
                    extra = time.perf_counter() - t
                    module, batcher = PrefixClassifier(clf, start), PrefixBatcher(enc, tok.pad_token_id, states)
                module.to(device)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                fit(module, batcher, idx, onehot, cfg, seed=0, desc=f"{name} {regime} {precision}")
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                secs = time.perf_counter() - t
                mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
                rows.append({"model": name, "regime": regime + ("+prefix" if regime == "last_k" else ""),
                             "precision": precision, "examples_per_s": len(idx) / secs, "seconds": secs,
                             "prefix_cache_s": extra, "peak_gib": mem})
                print(json.dumps(rows[-1]), flush=True)
                del module, clf
        del backbone
    return rows


def w2s_run(n: int, max_length: int) -> dict:
    from superalign.store import Store
    from superalign.w2s import W2SConfig, run_w2s

    tmp = Path(tempfile.mkdtemp())
    synthetic_csv(tmp / "t.csv", n)
    cfg = W2SConfig.parse({
        "task": str(tmp / "t.csv"), "splits": {"weak_train": n // 8, "strong_train": n // 2, "val": n // 16, "test": n // 4},
        "weak": {"model": "bert-22m-random", "regime": "full", "epochs": 1, "max_length": max_length, "lr": 5e-5},
        "strong": {"model": "llama-135m-random", "regime": "full", "epochs": 1, "max_length": max_length, "lr": 2e-5},
        "methods": [{"name": "naive"}, {"name": "aux-conf", "loss": "logconf"}], "seeds": [0, 1, 2], "n_boot": 300})
    t = time.perf_counter()
    res = run_w2s(cfg, store=Store(tmp / "store"), out_dir=tmp / "run")
    secs = time.perf_counter() - t
    print(res.table(), flush=True)
    return {"seconds": secs, "stages": res.summary["stages"], "precision": "auto"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-w2s", action="store_true")
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    register()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {dev}; torch {torch.__version__}; transformers {transformers.__version__}", flush=True)
    rows = throughput(args.n, args.max_length)
    print(f"\n{'model':20s} {'regime':14s} {'precision':9s} {'examples/s':>11s} {'peak GiB':>9s}")
    for r in rows:
        print(f"{r['model']:20s} {r['regime']:14s} {r['precision']:9s} {r['examples_per_s']:11.1f} {r['peak_gib']:9.2f}")
    base = {(r["model"], r["regime"]): r["examples_per_s"] for r in rows if r["precision"] == "no"}
    for r in rows:
        if r["precision"] == "bf16":
            print(f"bf16 speed-up {r['model']} {r['regime']}: {r['examples_per_s'] / base[(r['model'], r['regime'])]:.2f}x")
    out = {"device": dev, "throughput": rows}
    if not args.skip_w2s:
        out["w2s"] = w2s_run(args.n, args.max_length)
        print(f"W2S run (weak bert-22m full FT -> strong llama-135m full FT, 3 seeds x 2 methods, 1 epoch): "
              f"{out['w2s']['seconds']:.1f} s; {out['w2s']['stages']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
