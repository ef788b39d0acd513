#!/usr/bin/env bash
# Installs what the Kubernetes manifest tests need, offline after the first run:
# - kubectl (its built-in kustomize renders the overlays), from Debian's packages;
# - kubernetes-validate (the Kubernetes JSON schemas of every release, and jsonschema),
#   from PyPI into a virtual environment under ~/.cache/deep-review.
# Prints the virtual environment's python. Exit 75 when a registry cannot be reached.
set -euo pipefail
VERSION=1.37.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/deep-review/k8s-validate-$VERSION"
if ! command -v kubectl >/dev/null; then
  echo "installing kubectl (kubernetes-client)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client; } >&2 || exit 75
fi
if [ ! -x "$cache/bin/python" ] || ! "$cache/bin/python" -c "import kubernetes_validate" 2>/dev/null; then
  echo "installing kubernetes-validate $VERSION into $cache" >&2
  rm -rf "$cache"
  python3 -m venv "$cache" >&2
  "$cache/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" >&2 || { rm -rf "$cache"; exit 75; }
fi
echo "$cache/bin/python"
