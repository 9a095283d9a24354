#!/usr/bin/env bash
# One command from a fresh clone to a working `tti-eval`: `poetry install --all-extras` of poetry.lock (the lock of
# record, every file checked against its sha256) into .venv, tti-eval itself in editable mode, plus the git
# pre-commit hooks. Poetry rather than pip from requirements.lock, which installs the same pins: on this project's
# 2-core machines Poetry took about half pip's time, downloading every wheel included (it installs in parallel, pip
# one wheel after another; figures in README). A Poetry 2 on PATH is used; otherwise Poetry is installed into .tools/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python3}"
POETRY_VERSION=2.5.1 # the version that wrote poetry.lock
if command -v poetry >/dev/null && poetry --version | grep -q 'version 2\.'; then
  POETRY=poetry
else
  POETRY=.tools/poetry/bin/poetry
  if [ ! -x "$POETRY" ]; then
    "$PYTHON" -m venv .tools/poetry
    .tools/poetry/bin/python -m pip install --quiet --disable-pip-version-check "poetry==$POETRY_VERSION"
  fi
fi
# .venv in the clone, made from $PYTHON, whatever the user's Poetry settings: the hooks and README expect it there.
# Poetry downloads every wheel (3.2 GB with torch's CUDA libraries); its default gives up on the first network error.
export POETRY_VIRTUALENVS_IN_PROJECT=true POETRY_VIRTUALENVS_CREATE=true POETRY_REQUESTS_MAX_RETRIES=3
"$POETRY" env use --quiet "$PYTHON"
"$POETRY" install --quiet --all-extras --no-interaction

if [ -z "${CI:-}" ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  .venv/bin/pre-commit install --install-hooks >/dev/null
fi
echo "tti-eval is installed in .venv: run 'source .venv/bin/activate' and then 'tti-eval --help'."
