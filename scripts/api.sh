#!/usr/bin/env bash
# Builds the API reference (docs/api.md) into build/api/ with pdoc, from the public modules'
# __all__, docstrings and type hints. -W error turns pdoc's warnings into errors: a name in an
# __all__ that does not resolve, a type hint it cannot evaluate. pdoc follows a package's
# __all__, which names no subpackages here, so the public modules are named one by one (the same
# list as PUBLIC_MODULES in tests/test_exported_members.py, which checks this line).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
rm -rf build/api
"$PYTHON" -W error -m pdoc --docformat restructuredtext --template-directory docs/pdoc --output-directory build/api \
  nomyo_audit nomyo_audit.client nomyo_audit.wire nomyo_audit.errors nomyo_audit.tpm nomyo_audit.eventlog nomyo_audit.attest \
  nomyo_audit.policy nomyo_audit.audit nomyo_audit.router nomyo_audit.ca nomyo_audit.witness nomyo_audit.cli
