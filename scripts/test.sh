#!/usr/bin/env bash
# README command 2: set everything up, then run lint, types and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=router,tpm,postgres,dev bash scripts/bootstrap.sh

# The reference client, for the wire-compatibility tests. It pins exact
# versions of its dependencies, so it goes into its own directory, no deps.
NOMYO_REF=.cache/nomyo-0.2.9
if [ ! -f "$NOMYO_REF/nomyo/__init__.py" ]; then
  .venv/bin/python -m pip install -q --no-deps --target "$NOMYO_REF" nomyo==0.2.9
fi
export NOMYO_REFERENCE_PATH="$PWD/$NOMYO_REF"

.venv/bin/ruff check nomyo_audit tests bench
.venv/bin/mypy
bash scripts/api.sh    # the API reference, into build/api/ (docs/api.md); pdoc warnings are errors
exec .venv/bin/python -m pytest "$@"
