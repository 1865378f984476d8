"""AI-feedback labeller throughput: one forward pass per ordering against a naive implementation.

superalign's labeller appends the options' shared prefix (" (") to the comparison prompt and reads
P("A") and P("B") from one forward pass per ordering. The naive implementation scores " (A)" and
" (B)" as full continuations: two forward passes per ordering. Both run here on the same pairs,
model and batch size; the script prints pairs/second for each, the ratio, and how far the two
soft preferences differ.

    python benchmarks/bench_labeller.py [--model gemma3-270m] [--pairs 32]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import transformers

    from superalign.models import load_causal_lm
    from superalign.rlaif.constitution import load_constitution
    from superalign.rlaif.feedback import FeedbackConfig, Labeller
    from superalign.rlaif.pipeline import load_prompt_set

    transformers.logging.set_verbosity_error()
    ps = load_prompt_set(None)
    rows = (ps.labelled_pairs * (args.pairs // len(ps.labelled_pairs) + 1))[: args.pairs]
    model, tok, info = load_causal_lm(args.model)
    lab = Labeller(model, tok, load_constitution(), FeedbackConfig(model=args.model, n_principles=1,
                                                                    batch_size=args.batch_size))
    prompts, first, second = [r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    lab.label(prompts[:2], first[:2], second[:2])  # warm-up
    timings, results = {}, {}
    for name, naive in (("one pass per ordering", False), ("naive: two passes per ordering", True)):
        t = time.perf_counter()
        results[name] = lab.label(prompts, first, second, seed=0, naive=naive)
        timings[name] = time.perf_counter() - t
    fast, slow = timings["one pass per ordering"], timings["naive: two passes per ordering"]
    print(f"model {args.model}: {args.pairs} pairs x 2 orderings, batch {args.batch_size}")
    for name, s in timings.items():
        print(f"  {name:32s} {s:7.1f} s  {args.pairs / s:6.2f} pairs/s")
    print(f"  speed-up: {slow / fast:.2f}x")
    diff = np.abs(results["one pass per ordering"].p_first - results["naive: two passes per ordering"].p_first)
    print(f"  |P(first) one-pass - naive|: mean {diff.mean():.4f}, max {diff.max():.4f} "
          "(the naive version also scores the closing ')' token)")


if __name__ == "__main__":
    main()
