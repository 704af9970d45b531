#!/usr/bin/env bash
# The main job on the embedded default: local Ray, CPU, SmolLM2-135M, built-in data.
# Extra arguments are config overrides, e.g. `bash scripts/run.sh data.rows=600`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m taosr.ray_jobs.pipeline --config configs/tiny.yaml "$@"
