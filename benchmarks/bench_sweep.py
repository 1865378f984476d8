"""W2S sweep: stage sharing against running the same cells independently.

One run measures, on the same 2 weak × 2 strong × 2 seed grid (8 cells), executor and workers:

  A. the sweep over one shared store, ``weak_first`` order (one cell per weak supervisor first);
  B. the same, plain grid order;
  C. every cell on its own, each in a fresh store (``run_sweep(..., isolate=True)``): what running
     the 8 W2S configs as separate jobs costs.

and prints wall times, stages computed, and the ratio C / A. Worker start-up (imports, model
loading) is included in every figure, as it is in a real sweep.

The default grid uses the random-init test models (no download) with a fine-tuned weak supervisor
(the stage that one weak model's students share) and probed strong students (features shared per
model); ``--weak/--strong/--task`` take zoo names for a run on real models.

    python benchmarks/bench_sweep.py [--workers 2] [--weak-regime full] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POS = ["good", "great", "fine", "lovely", "superb", "nice"]
NEG = ["bad", "awful", "poor", "dull", "weak", "sad"]
FILLER = ["the", "a", "movie", "plot", "was", "and", "very", "it", "film"]


def toy_task(path: Path, n: int, seed: int = 0) -> Path:
    """A lexical-rule sentiment task with 10% label noise (as in the tests)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for _ in range(n):
            y = rng.randint(0, 1)
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
            words.insert(rng.randint(0, len(words)), rng.choice(POS if y else NEG))
            w.writerow([" ".join(words), 1 - y if rng.random() < 0.1 else y])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weak", default="tiny-bert,tiny-llama", help="two weak models (comma-separated)")
    ap.add_argument("--strong", default="tiny-llama,tiny-llama-wide", help="two strong models")
    ap.add_argument("--task", default=None, help="a task (default: a generated toy CSV)")
    ap.add_argument("--n", type=int, default=1600, help="examples of the toy task (1/4 weak train, 2/5 strong "
                                                          "train, 1/20 val, 1/5 test)")
    ap.add_argument("--weak-regime", default="full", help="the weak supervisor's regime (probe, last_k, full)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each variant, interleaved; the fastest counts "
                                                          "(the machine may be shared)")
    ap.add_argument("--seeds", default="0,1", help="seeds (comma-separated)")
    ap.add_argument("--methods", type=int, default=1, choices=[1, 2], help="1: naive; 2: naive and logconf")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per cell (default cores // workers)")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from superalign.w2s.sweep import SweepConfig, expand, run_sweep

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        tmp = Path(tmp)
        task = args.task or str(toy_task(tmp / "toy.csv", args.n))
        seeds = [int(x) for x in args.seeds.split(",")]
        base = {
            "name": "bench", "task": task,
            "splits": {"weak_train": args.n // 4, "strong_train": args.n * 2 // 5, "val": args.n // 20,
                       "test": args.n // 5},
            "weak": {"model": args.weak.split(",")[0], "regime": args.weak_regime, "epochs": args.epochs,
                     "batch_size": 16, "lr": 1e-3},
            "strong": {"model": args.strong.split(",")[0], "regime": "probe", "epochs": args.epochs},
            "methods": [{"name": "naive"}, {"name": "logconf", "loss": "logconf"}][: args.methods],
            "seeds": seeds, "n_boot": 200,
        }
        sweep = SweepConfig.parse({"name": "bench", "base": base, "weak": args.weak.split(","),
                                   "strong": args.strong.split(","), "seeds": seeds, "skip_not_larger": False})
        n_cells = len(expand(sweep))
        variants = {"shared store, weak_first order": {"order": "weak_first"},
                    "shared store, grid order": {"order": "grid"},
                    "independent cells (fresh store each)": {"isolate": True}}
        runs: dict[str, tuple[float, dict]] = {}
        for rep in range(args.repeat):
            for i, (label, kw) in enumerate(variants.items()):
                t0 = time.perf_counter()
                res = run_sweep(sweep, store_root=tmp / f"store-{rep}-{i}", out_dir=tmp / f"out-{rep}-{i}",
                                workers=args.workers, threads=args.threads, **kw)
                sec = time.perf_counter() - t0
                if label not in runs or sec < runs[label][0]:
                    runs[label] = (sec, res.summary)
        first = next(iter(runs.values()))[1]
        print(f"W2S sweep {len(args.weak.split(','))} weak x {len(args.strong.split(','))} strong x {args.methods} "
              f"method(s) x {len(seeds)} seed(s) = {n_cells} "
              f"cells; weak regime {args.weak_regime}, strong probe, {args.epochs} epochs; local executor, "
              f"{first['workers']} workers x {first['threads']} thread(s)")
        for label, (sec, s) in runs.items():
            st = s["stages"]
            print(f"  {label:<38} {sec:7.1f} s   stages computed {st['computed']:3d}, cached {st['cached']:3d}")
        print(f"  (fastest of {args.repeat} interleaved runs each; worker start-up included)")
        shared = runs["shared store, weak_first order"][0]
        print(f"  independent / shared (weak_first): {runs['independent cells (fresh store each)'][0] / shared:.2f}x; "
              f"grid / weak_first order: {runs['shared store, grid order'][0] / shared:.2f}x")


if __name__ == "__main__":
    main()
