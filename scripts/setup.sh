#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: the Fashion-MNIST Debian package (if apt is usable),
# a virtual environment in .venv, and npas-keras installed into it (which compiles the delegate).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "note: could not install dataset-fashion-mnist; demos fall back to scikit-learn digits"
  fi
fi
if ! command -v cmake >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq cmake g++) >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
