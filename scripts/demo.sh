#!/usr/bin/env bash
# The main job: set up, then train, prune, export and run a model through the delegate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/npas demo "$@"
