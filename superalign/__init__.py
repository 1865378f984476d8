"""superalign: a lab for aligning models that are stronger than their supervisors.

Layout (data → models → training → experiments → store → report, CLI on top):

- :mod:`superalign.data` — task registry, offline tasks, local files and hub data sets, splits
- :mod:`superalign.models` — model zoo, loading (hub, local, offline GGUF), classifier, features
- :mod:`superalign.training` — losses, regimes (probe, last_k, LoRA, full), the training loop
- :mod:`superalign.w2s` — the weak-to-strong pipeline and prompting baselines
- :mod:`superalign.store` — the content-addressed stage store (atomic, resumable, shared)
- :mod:`superalign.report` — tables, plots and HTML reports
- :mod:`superalign.metrics` — accuracy, ECE, bootstrap CIs, PGR
"""

__version__ = "0.1.0"
