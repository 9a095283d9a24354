#!/usr/bin/env bash
# One command from a fresh clone to a working `tti-eval`: a .venv holding the locked environment (installed with
# hashes from requirements.lock, the pip form of poetry.lock) and tti-eval itself in editable mode, plus the git
# pre-commit hooks. pip rather than `poetry install`: it needs no tool beyond Python itself, and it reads the
# wheels that pip already holds (its cache, and the wheels these machines keep on disk) where poetry downloads every
# file again into a cache of its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import platform, sys; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64" or sys.platform != "linux")'; then
  echo "requirements.lock is for CPython 3.11 on Linux x86_64; here, install from poetry.lock with 'poetry install --all-extras'." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
# The build backend (poetry-core) is in the lock, so the editable install needs nothing unpinned.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .

if [ -z "${CI:-}" ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  .venv/bin/pre-commit install --install-hooks >/dev/null
fi
echo "tti-eval is installed in .venv: run 'source .venv/bin/activate' and then 'tti-eval --help'."
