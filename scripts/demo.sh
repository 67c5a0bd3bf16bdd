#!/usr/bin/env bash
# README command 1: set everything up, then run the main job on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=router,tpm bash scripts/bootstrap.sh
exec .venv/bin/nomyo-audit demo "$@"
