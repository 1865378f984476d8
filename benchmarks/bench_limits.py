"""How far from this machine's limit do feature extraction and fine-tuning run?

For each zoo model the script measures

  1. the matmul peak (GFLOP/s) at the model's own shapes: every distinct (in, out) of the linear
     layers in its transformer blocks, multiplied by an (M, in) activation with M = ``--peak-m``
     rows, FLOP-weighted over the shapes (the best this machine does for that model's GEMMs); and
     the same at M = the tokens of one training batch (the ceiling small training batches face);
  2. feature extraction (``extract_features``: pooled hidden states, no grad), last-k fine-tuning
     with a plain full forward every step (``fit``, regime ``last_k``), the same with the frozen
     blocks streamed over chunks of upcoming batches (``StreamingPrefixBatcher``: what the W2S
     pipeline runs with ``prefix_cache: false``), last-k on cached prefix states (``prefix_cache:
     true``, the cache pass included) and full fine-tuning (``fit``, regime ``full``), each timed end
     to end, ``--repeats`` times;

and prints, per workload, the achieved FLOP/s as a fraction of the peak, with the padding waste
(padded slots / token positions run) of the batches it ran beside it.

A shared machine's speed drifts (here MiniLM's GEMM peak read 158-292 GFLOP/s in half an hour), so a
workload timed in a slow spell against a peak taken in a fast one (or the reverse) says more about
the machine than about the code. Every timed repeat therefore sits between two peak measurements
(``--pair-seconds`` each): ``of peak`` is the median over repeats of (that repeat's FLOP/s / the
mean of the peaks just before and after it), and ``peak`` the median of those adjacent peaks.
``of best`` divides the median FLOP/s by the highest peak this run measured for the model (the
initial ``--repeats`` peaks and every adjacent one, over all its workloads): the conservative
reading, printed beside it. FLOPs are counted on the token positions each pass computes, padding
excluded:

  forward  = 2 * N * tokens                  (N = parameters of the transformer blocks' linear layers;
  training = 6 * N_trained * tokens           embeddings are look-ups, norms/attention scores are
           + 2 * N_frozen  * tokens           left out: at <= 32 tokens per text they are < 2% here)

Packed inference (``superalign.models.packing``: decoders, several texts per row, a prefix all texts
share computed once per row) runs fewer positions than the texts have; the ``run/text`` column
gives positions run per text token (1.000 without packing), so ex/s is the user-visible speed and
GFLOP/s the machine's. In the last-k rows on prefix states the final block runs queries, MLP and
norms on each text's last token only (keys/values on every token), and is counted so. Padding,
Python overhead, optimizer steps (for full fine-tuning the optimizer also updates the embedding
matrix, which these FLOPs do not count) and small matrices all show as a lower ratio.

Usage:

    python benchmarks/bench_limits.py                                     # CPU, fp32, the offline zoo
    python benchmarks/bench_limits.py --device cuda --dtype bf16          # a GPU: bf16 autocast, SDPA

A JSON copy goes to ``benchmarks/results/limits-<device>-<date>.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def block_linears(model: nn.Module) -> tuple[list[nn.Linear], nn.ModuleList]:
    from superalign.training.regimes import transformer_blocks

    blocks = transformer_blocks(model)
    return [m for b in blocks for m in b.modules() if isinstance(m, nn.Linear)], blocks


def n_params(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters(recurse=False))


def gemm_peak(shapes: list[tuple[int, int]], m: int, device: str, dtype: torch.dtype, seconds: float = 0.6) -> float:
    """FLOP-weighted GFLOP/s of (m, k) @ (k, n) over ``shapes`` (each shape counted once)."""
    flops = secs = 0.0
    for k, n in sorted(set(shapes)):
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        sync(device)
        reps, t = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            sync(device)
            el = time.perf_counter() - t
            if el > seconds / max(1, len(set(shapes))) and reps >= 3:
                break
        flops += 2 * m * k * n * reps
        secs += el
    return flops / secs / 1e9


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm-l6,smollm2-135m,gemma3-270m")
    ap.add_argument("--task", default="wordnet_living")
    ap.add_argument("--n", type=int, default=1024, help="texts for feature extraction")
    ap.add_argument("--train-n", type=int, default=256, help="examples for one epoch of last-k fine-tuning")
    ap.add_argument("--full-n", type=int, default=128, help="examples for one epoch of full fine-tuning")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--last-k", type=int, default=1)
    ap.add_argument("--peak-m", type=int, default=2048, help="rows of the activation in the peak GEMMs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                    help="GEMM dtype of the peak; bf16/fp16 = autocast for the workloads (weights stay fp32)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="times each workload runs, each between two peak measurements (see above)")
    ap.add_argument("--pair-seconds", type=float, default=0.4,
                    help="seconds of each peak measurement taken just before and after a timed repeat")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/limits-<device>-<date>.json)")
    args = ap.parse_args()

    import transformers

    from superalign.data import load_task
    from superalign.models import load_backbone
    from superalign.models.classifier import INFERENCE_TOKENS, encode, length_batches, padding_waste, resolve_pooling
    from superalign.models.features import extract_features
    from superalign.models.packing import can_pack, packed_batches
    from superalign.training import TokenBatcher, TrainConfig, build_classifier, fit
    from superalign.training.prefix import (
        PrefixBatcher,
        PrefixClassifier,
        StreamingPrefixBatcher,
        compute_prefix_states,
    )
    from superalign.training.regimes import copy_for_regime
    from superalign.training.trainer import epoch_batches

    transformers.logging.set_verbosity_error()
    dev, dtype = args.device, DTYPES[args.dtype]
    amp = dict(device_type=dev, dtype=dtype, enabled=dtype != torch.float32)
    mp = {"fp32": "no"}.get(args.dtype, args.dtype)
    task = load_task(args.task, max_examples=max(args.n, args.train_n, args.full_n), seed=0)
    texts = task.inputs()
    onehot = np.eye(task.num_classes, dtype=np.float32)[task.labels]
    header = (f"{device_name(dev)}; torch {torch.__version__}, threads {torch.get_num_threads()} "
              f"(interop {torch.get_num_interop_threads()}), {args.dtype}; task {args.task}, "
              f"max_length {args.max_length}, batch {args.batch_size}")
    print(header)
    rows: list[dict] = []

    def repeated(run) -> list[tuple[float, float, float]]:
        """(seconds, peak before, peak after) of each of ``--repeats`` calls of ``run``: the GEMM peak at
        the model's shapes is measured just before and just after every call."""
        out = []
        for _ in range(args.repeats):
            before = gemm_peak(shapes, args.peak_m, dev, dtype, args.pair_seconds)
            seconds = run()
            out.append((seconds, before, gemm_peak(shapes, args.peak_m, dev, dtype, args.pair_seconds)))
        return out

    for name in args.models.split(","):
        torch.manual_seed(0)
        backbone, tok, info = load_backbone(name)
        if hasattr(backbone, "set_attn_implementation"):
            try:
                backbone.set_attn_implementation("sdpa")
            except (ValueError, ImportError):
                pass
        attn = getattr(backbone.config, "_attn_implementation", "?")
        backbone.to(dev).requires_grad_(False)
        linears, blocks = block_linears(backbone)
        n_body = n_params(linears)
        trained_linears = [m for b in list(blocks)[-args.last_k:] for m in b.modules() if isinstance(m, nn.Linear)]
        n_trained = n_params(trained_linears)
        shapes = [(m.in_features, m.out_features) for m in linears]
        enc_all = encode(tok, texts, args.max_length)
        lengths = enc_all.lengths()
        m_train = int(round(lengths.mean() * args.batch_size))
        # the highest of --repeats measurements before any workload; with every repeat's adjacent peaks
        # it gives the run's best for this model ("of best", filled in once the model's workloads are done)
        peak = max(gemm_peak(shapes, args.peak_m, dev, dtype) for _ in range(args.repeats))
        first_row = len(rows)
        peak_small = max(gemm_peak(shapes, m_train, dev, dtype) for _ in range(args.repeats))
        other = torch.bfloat16 if dtype == torch.float32 else torch.float32
        peak_other = max(gemm_peak(shapes, args.peak_m, dev, other) for _ in range(args.repeats))
        print(f"\n{name} ({info.params_m}M, {n_body / 1e6:.1f}M in block linears, attention {attn}): "
              f"GEMM peak {peak:.1f} GFLOP/s at M={args.peak_m}, {peak_small:.1f} at M={m_train} "
              f"(one training batch); {str(other).split('.')[-1]} at M={args.peak_m}: {peak_other:.1f}")

        def record(workload: str, timed: list[tuple[float, float, float]], flops: float, waste: float,
                   examples: int, run_per_text: float = 1.0) -> None:
            seconds = float(np.median([s for s, _, _ in timed]))
            adjacent = [(before + after) / 2 for _, before, after in timed]
            achieved = flops / seconds / 1e9
            paired = [flops / s / 1e9 / p for (s, _, _), p in zip(timed, adjacent)]
            rows.append({"model": name, "workload": workload, "seconds": seconds, "examples_per_s": examples / seconds,
                         "gflops": achieved, "peak_gflops": float(np.median(adjacent)),
                         "fraction_of_peak": float(np.median(paired)),
                         "fraction_of_peak_range": [min(paired), max(paired)],
                         "repeats": [{"seconds": s, "peak_before_gflops": b, "peak_after_gflops": a}
                                     for s, b, a in timed],
                         "padding_waste": waste, "run_per_text": run_per_text, "peak_gflops_train_m": peak_small,
                         "attention": attn})

        def inference_positions(ids) -> tuple[int, int]:
            """(padded slots, token positions) an inference pass over ``ids`` runs, batched as the library does."""
            if can_pack(backbone, ids):
                batches = list(packed_batches(ids, tok.pad_token_id))
                return (sum(b.input_ids.numel() for b in batches),
                        sum(b.input_ids.shape[0] * b.prefix + int(b.length.sum()) for b in batches))
            lens = np.array([len(x) for x in ids])
            waste = padding_waste(lens, list(length_batches(lens, args.batch_size, INFERENCE_TOKENS)))
            return int(round(waste * lens.sum())), int(lens.sum())

        def prefix_training_flops(pre, lt: np.ndarray, frozen_positions: int) -> float:
            """FLOPs of last-k on prefix states: frozen blocks on the positions run, trained ones per token,
            the final block's non-key/value linears on one token per text when it runs last-token only."""
            flops = 2 * (n_body - n_trained) * frozen_positions + 6 * n_trained * lt.sum()
            if pre.last_token is not None and pre.last_token.checked:
                attn_ = blocks[-1].self_attn
                n_kv = n_params([attn_.k_proj, attn_.v_proj])
                n_last = n_params([m for m in blocks[-1].modules() if isinstance(m, nn.Linear)])
                flops -= 6 * (n_last - n_kv) * (lt.sum() - len(lt))
            return flops

        # feature extraction -------------------------------------------------------------------
        sub = texts[: args.n]
        lens = lengths[: args.n]
        with torch.autocast(**amp):
            extract_features(backbone, tok, sub[: min(64, len(sub))], pooling=resolve_pooling("auto", info.arch),
                             max_length=args.max_length, batch_size=args.batch_size)  # warm-up

            def run_features() -> float:
                sync(dev)
                t = time.perf_counter()
                extract_features(backbone, tok, sub, pooling=resolve_pooling("auto", info.arch),
                                 max_length=args.max_length, batch_size=args.batch_size)
                sync(dev)
                return time.perf_counter() - t

            timed = repeated(run_features)
        slots, run = inference_positions(encode(tok, sub, args.max_length).ids)
        record("features", timed, 2 * n_body * run, slots / run, len(sub), run / lens.sum())

        # last-k fine-tuning, whole model every step --------------------------------------------
        n = args.train_n
        idx = np.arange(n)
        lt = lengths[:n]
        cfg = TrainConfig(regime="last_k", last_k=args.last_k, epochs=1, batch_size=args.batch_size, lr=1e-4,
                          max_length=args.max_length, mixed_precision=mp, prefix_cache=False)
        waste_train = padding_waste(lt, epoch_batches(n, args.batch_size, 0, 0, lt))
        batcher = TokenBatcher(enc_all, tok.pad_token_id)

        def run_full_forward() -> float:
            clf = build_classifier(copy_for_regime(backbone, cfg), task.num_classes, cfg, info.arch).to(dev)
            sync(dev)
            t = time.perf_counter()
            fit(clf, batcher, idx, onehot[:n], cfg, seed=0, desc="last_k")
            sync(dev)
            return time.perf_counter() - t

        record(f"last-{args.last_k} full forward/step", repeated(run_full_forward),
               (2 * (n_body - n_trained) + 6 * n_trained) * lt.sum(), waste_train, n)

        # last-k, frozen blocks streamed over chunks of 16 upcoming batches ----------------------
        start = len(blocks) - args.last_k
        sub_enc = type(enc_all)(enc_all.ids[:n])
        made: list = []  # the last PrefixClassifier built (whether its final block ran last-token only)

        def run_streamed() -> float:
            pre = PrefixClassifier(build_classifier(copy_for_regime(backbone, cfg), task.num_classes, cfg,
                                                    info.arch).to(dev), start)
            sync(dev)
            t = time.perf_counter()
            with torch.autocast(**amp):
                fit(pre, StreamingPrefixBatcher(backbone, sub_enc, tok.pad_token_id, start,
                                                batch_size=args.batch_size), idx, onehot[:n], cfg, seed=0,
                    desc="streamed")
            sync(dev)
            made[:] = [pre]
            return time.perf_counter() - t

        timed = repeated(run_streamed)
        _, run = inference_positions(sub_enc.ids)  # (each epoch's chunks pack alike; at --train-n <= 512 one chunk)
        record(f"last-{args.last_k} no cache (streamed)", timed, prefix_training_flops(made[0], lt, run), waste_train, n,
               run / lt.sum())

        # last-k on cached prefix states (cache pass included) -----------------------------------
        def run_cached() -> float:
            sync(dev)
            t = time.perf_counter()
            with torch.autocast(**amp):
                states = compute_prefix_states(backbone, sub_enc, tok.pad_token_id, start, args.batch_size)
            pre = PrefixClassifier(build_classifier(copy_for_regime(backbone, cfg), task.num_classes, cfg,
                                                    info.arch).to(dev), start)
            fit(pre, PrefixBatcher(sub_enc, tok.pad_token_id, states), idx, onehot[:n], cfg, seed=0, desc="prefix")
            sync(dev)
            made[:] = [pre]
            return time.perf_counter() - t

        timed = repeated(run_cached)
        record(f"last-{args.last_k} + prefix cache", timed, prefix_training_flops(made[0], lt, run), waste_train, n,
               run / lt.sum())
        made.clear()

        # full fine-tuning ----------------------------------------------------------------------
        n = args.full_n
        lf = lengths[:n]
        fcfg = TrainConfig(regime="full", epochs=1, batch_size=args.batch_size, lr=3e-5, max_length=args.max_length,
                           mixed_precision=mp)
        def run_full() -> float:
            full = build_classifier(copy.deepcopy(backbone), task.num_classes, fcfg, info.arch).to(dev)
            sync(dev)
            t = time.perf_counter()
            fit(full, batcher, np.arange(n), onehot[:n], fcfg, seed=0, desc="full")
            sync(dev)
            return time.perf_counter() - t

        record("full fine-tune", repeated(run_full), 6 * n_body * lf.sum(),
               padding_waste(lf, epoch_batches(n, args.batch_size, 0, 0, lf)), n)
        best = max([peak] + [p for r in rows[first_row:] for t in r["repeats"]
                             for p in (t["peak_before_gflops"], t["peak_after_gflops"])])
        for r in rows[first_row:]:
            r["best_peak_gflops"], r["fraction_of_best_peak"] = best, r["gflops"] / best
        del backbone

    print(f"\n{'model':14s} {'workload':28s} {'ex/s':>8s} {'GFLOP/s':>8s} {'peak':>7s} {'of peak':>8s} {'[range]':>13s}"
          f" {'of best':>8s} {'padding':>8s} {'run/text':>9s}")
    for r in rows:
        lo, hi = r["fraction_of_peak_range"]
        print(f"{r['model']:14s} {r['workload']:28s} {r['examples_per_s']:8.1f} {r['gflops']:8.1f} "
              f"{r['peak_gflops']:7.1f} {100 * r['fraction_of_peak']:7.1f}% {f'[{100 * lo:.0f}-{100 * hi:.0f}%]':>13s}"
              f" {100 * r['fraction_of_best_peak']:7.1f}% {r['padding_waste']:8.3f} {r['run_per_text']:9.3f}")
    print(f"(median of {args.repeats} repeats. peak: FLOP-weighted fp32/bf16 GEMM rate at the model's block shapes,\n"
          " measured just before and after each repeat; of peak: median of each repeat's FLOP/s over its adjacent peak,\n"
          " [range] over repeats; of best: median FLOP/s over the highest peak this run measured for the model;\n"
          " GFLOP/s on the token positions run; padding: padded slots / positions run; run/text: positions the\n"
          " inference pass ran per text token)")
    out = Path(args.out) if args.out else (Path(__file__).parent / "results" /
                                           f"limits-{dev}-{dt.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "device": device_name(dev), "header": header, "args": vars(args), "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
