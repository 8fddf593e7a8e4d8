#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/k8s against the Kubernetes API schemas
# (strict: unknown fields are errors), with kubernetes-validate from PyPI in
# .cache/kv. CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
KV_VERSION=1.37.0
if ! .cache/kv/bin/kubernetes-validate --version 2>/dev/null | grep -qx "$KV_VERSION"; then
  echo "validate-deploy: installing kubernetes-validate $KV_VERSION (PyPI)" >&2
  python3 -m venv .cache/kv
  .cache/kv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
.cache/kv/bin/kubernetes-validate --strict --quiet deploy/k8s/*.yaml
echo "validate-deploy: $(ls deploy/k8s/*.yaml | wc -l) manifests valid" >&2
