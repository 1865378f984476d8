"""Strong-student training throughput: superalign against a plain ``transformers.Trainer``.

Everything is measured side by side in one run, on the same model, data, batch size and trainable
parameters (the last ``--last-k`` blocks, the final norm and a classification head):

  A. ``transformers.Trainer`` with ``AutoModelForSequenceClassification`` and
     ``DataCollatorWithPadding`` (the usual recipe: random batches padded to their longest text),
     fp32, its default optimizer;
  B. superalign's loop with ``prefix_cache: false`` (what the W2S pipeline runs then): length-bucketed
     batches (shuffled, sorted by length within pools of 32 batches, batch order shuffled), fused
     AdamW, fp32, and the frozen blocks run once per epoch over chunks of ``--chunk`` upcoming batches
     (``StreamingPrefixBatcher``: nothing kept between chunks; the frozen forward runs for every
     example every epoch, as in A). A decoder's chunk goes packed (``superalign.models.packing``:
     several texts per row, no padding, the prefix every text shares, such as Gemma's BOS token,
     computed once per row), and the final block runs on each text's last token only
     (``PrefixClassifier(last_token=True)``: its other positions feed nothing under last-token
     pooling). Both are exact up to float rounding; the two ablation rows below B turn each off;
  B0. the same loop with a plain full forward every step (the frozen blocks at the training batch
     size), for reference;
  C. superalign's loop on cached prefix states (frozen blocks run once; the cost of that pass is
     reported and included in the epoch-1 figure).

and the linear-probe path:

  D. a linear head trained through the frozen backbone every epoch (regime ``head``);
  E. the same head on cached pooled features (regime ``probe``), extraction time included.

Usage (defaults are the offline W2S default's last-block strong student: Gemma-3-270M on 2,500
WordNet words, 3 epochs, batch 32, last block):

    python benchmarks/bench_w2s_training.py [--model gemma3-270m] [--task wordnet_living] [--n 2500] [--repeats 3]

Every setup runs ``--repeats`` times, interleaved (A, B0, B, ..., then again), so that a slow spell of
a shared machine slows every setup alike; the table gives median seconds and the median speed-up
with its range over the repeats.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
B = "B superalign, prefix_cache: false"
B0 = "B0 superalign, full forward/step"
B_NOSHARE = "B-s  B without the shared prefix"
B_NOLAST = "B-l  B without last-token block"
C = "C superalign, prefix_cache: true"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--task", default="wordnet_living")
    ap.add_argument("--n", type=int, default=2500, help="training examples (the W2S default's strong_train)")
    ap.add_argument("--epochs", type=int, default=3, help="the W2S default's last-block students train 3 epochs")
    ap.add_argument("--probe-epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--last-k", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=16, help="B: batches whose frozen forward runs together")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every setup this many times, interleaved; medians and ranges are printed")
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    from superalign.data import load_task
    from superalign.models import load_backbone
    from superalign.models.classifier import Classifier, encode, resolve_pooling
    from superalign.models.features import extract_features
    from superalign.models.loading import resolve
    from superalign.training import FeatureBatcher, TokenBatcher, TrainConfig, build_classifier, fit, probe_head
    from superalign.training.prefix import (
        PrefixBatcher,
        PrefixClassifier,
        StreamingPrefixBatcher,
        compute_prefix_states,
    )
    from superalign.training.regimes import copy_for_regime, transformer_blocks

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    task = load_task(args.task, max_examples=args.n, seed=0)
    y = task.labels
    onehot = np.eye(task.num_classes, dtype=np.float32)[y]
    idx = np.arange(len(task))
    backbone, tok, info = load_backbone(args.model)
    backbone.requires_grad_(False)
    enc = encode(tok, task.inputs(), args.max_length)
    n_tokens = int(enc.lengths().sum())
    print(f"model {args.model} ({info.params_m}M, {info.arch}), task {args.task}: {len(task)} examples, "
          f"{n_tokens} tokens, batch {args.batch_size}, torch threads {torch.get_num_threads()}")

    source, _ = resolve(args.model)
    ds = task.to_hf().map(lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True,
                          remove_columns=["text"])
    cfg = TrainConfig(regime="last_k", last_k=args.last_k, epochs=args.epochs, batch_size=args.batch_size, lr=1e-4,
                      max_length=args.max_length)
    start = len(transformer_blocks(backbone)) - args.last_k

    def run_trainer() -> float:  # A. transformers.Trainer (model built outside the timing)
        hf = AutoModelForSequenceClassification.from_pretrained(source, num_labels=task.num_classes,
                                                                dtype=torch.float32)
        hf.config.pad_token_id = tok.pad_token_id
        hf.requires_grad_(False)
        trainable = [*list(transformer_blocks(hf))[-args.last_k:]]
        for name, module in hf.named_modules():
            if name.split(".")[-1] in {"norm", "score", "classifier", "final_layernorm", "pooler"}:
                trainable.append(module)
        for m in trainable:
            m.requires_grad_(True)
        targs = TrainingArguments(output_dir="/tmp/superalign-bench-trainer",
                                  per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                                  learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                                  use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
                                  seed=0)
        trainer = Trainer(model=hf, args=targs, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        t = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t

    def run_full_forward() -> float:  # B0. superalign, plain full forward every step
        clf = build_classifier(copy_for_regime(backbone, cfg), task.num_classes, cfg, info.arch)
        t = time.perf_counter()
        fit(clf, TokenBatcher(enc, tok.pad_token_id), idx, onehot, cfg, seed=0, desc="B0")
        return time.perf_counter() - t

    def run_streamed(share: bool = True, last: bool = True, desc: str = "B") -> float:
        """B (and its ablations): prefix_cache: false, frozen blocks streamed over chunks of upcoming batches."""
        pre = PrefixClassifier(build_classifier(copy_for_regime(backbone, cfg), task.num_classes, cfg, info.arch),
                               start, last_token=last)
        t = time.perf_counter()
        fit(pre, StreamingPrefixBatcher(backbone, enc, tok.pad_token_id, start, chunk=args.chunk,
                                        batch_size=args.batch_size, share_prefix=share), idx, onehot, cfg, seed=0,
            desc=desc)
        return time.perf_counter() - t

    cache_s: list[float] = []

    def run_cached() -> float:  # C. superalign, cached prefix states (the cache pass included)
        t = time.perf_counter()
        states = compute_prefix_states(backbone, enc, tok.pad_token_id, start, args.batch_size)
        cache_s.append(time.perf_counter() - t)
        pre = PrefixClassifier(build_classifier(copy_for_regime(backbone, cfg), task.num_classes, cfg, info.arch),
                               start)
        fit(pre, PrefixBatcher(enc, tok.pad_token_id, states), idx, onehot, cfg, seed=0, desc="C")
        return time.perf_counter() - t

    hcfg = TrainConfig(regime="head", epochs=args.probe_epochs, batch_size=args.batch_size, max_length=args.max_length)

    def run_head() -> float:  # D. a linear head through the frozen backbone every epoch
        head = build_classifier(copy_for_regime(backbone, hcfg), task.num_classes, hcfg, info.arch)
        t = time.perf_counter()
        fit(head, TokenBatcher(enc, tok.pad_token_id), idx, onehot, hcfg, seed=0, desc="D")
        return time.perf_counter() - t

    def run_probe() -> float:  # E. the same head on cached pooled features (extraction included)
        t = time.perf_counter()
        feats = extract_features(backbone, tok, task.inputs(), pooling=resolve_pooling("auto", info.arch),
                                 max_length=args.max_length, batch_size=args.batch_size)[-1]
        feats_t = torch.from_numpy(feats)
        fit(probe_head(feats_t, task.num_classes), FeatureBatcher(feats_t), idx, onehot,
            TrainConfig(epochs=args.probe_epochs, batch_size=args.batch_size), seed=0)
        return time.perf_counter() - t

    setups = {"A trainer": run_trainer, B0: run_full_forward, B: run_streamed,
              B_NOSHARE: lambda: run_streamed(share=False, desc="B-s"),
              B_NOLAST: lambda: run_streamed(last=False, desc="B-l"), C: run_cached,
              "D head": run_head, "E probe": run_probe}
    times: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every setup alike
        for key, run in setups.items():
            times[key].append(run())
    _ = Classifier  # (imported for readers: the module both D and E train a head of)

    from superalign.models.classifier import padding_waste
    from superalign.training.trainer import epoch_batches

    lengths = enc.lengths()
    rng = np.random.default_rng(0)  # Trainer's sampler draws a random order: its waste, estimated on a seeded one
    random_batches = [b for e in range(args.epochs) for b in np.array_split(rng.permutation(len(task)),
                                                                          -(-len(task) // args.batch_size))]
    ours = [b for e in range(args.epochs) for b in epoch_batches(len(task), args.batch_size, 0, e, lengths)]
    ex = len(task) * args.epochs
    med = {k: float(np.median(v)) for k, v in times.items()}

    def ratio(base: str, key: str) -> str:
        r = np.array(times[base]) / np.array(times[key])
        span = f"  [{r.min():.2f}-{r.max():.2f}]" if len(r) > 1 else ""
        return f"{float(np.median(r)):19.2f}x{span}"

    print(f"\nlast-{args.last_k}-block fine-tuning, {args.epochs} epoch(s) of {len(task)} examples; "
          f"{args.repeats} interleaved repeat(s): median seconds, median speed-up [range over repeats]")
    print(f"{'setup':34s} {'seconds':>8s} {'examples/s':>11s} {'speed-up vs Trainer':>20s}")
    for key in ("A trainer", B, B_NOSHARE, B_NOLAST, B0, C):
        print(f"{key:34s} {med[key]:8.1f} {ex / med[key]:11.1f} {ratio('A trainer', key)}")
    print(f"  (C includes {float(np.median(cache_s)):.1f} s to cache the prefix states once)")
    print(f"  padding waste (padded / real tokens): Trainer's DataCollatorWithPadding on random batches "
          f"~{padding_waste(lengths, random_batches):.3f}, superalign's length-bucketed batches "
          f"{padding_waste(lengths, ours):.3f}")
    print(f"\nlinear head, {args.probe_epochs} epochs")
    print(f"{'D head through frozen backbone':34s} {med['D head']:8.1f}")
    print(f"{'E probe on cached features':34s} {med['E probe']:8.1f}   speed-up {ratio('D head', 'E probe').strip()}")

if __name__ == "__main__":
    main()
