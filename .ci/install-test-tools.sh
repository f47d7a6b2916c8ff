#!/usr/bin/env bash
# System tools the test suite drives: Debian's chromium (the chat page's browser test) and
# the kubectl/helm binaries (Kubernetes tests). Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
bash .ci/install-kube-tools.sh
