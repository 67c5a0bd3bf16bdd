#!/usr/bin/env bash
# Sets up everything nomyo-audit needs on a Debian/Ubuntu machine, idempotently:
#   system packages (swtpm, tpm2-tools, the TSS headers for tpm2-pytss, venv support)
#   and a virtualenv in .venv with the package and the extras named in $EXTRAS.
# Uses apt only when something is missing, and only as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-router,tpm}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(python3-venv python3-dev gcc pkg-config libtss2-dev swtpm swtpm-tools tpm2-tools)
# The test suite also renders the HTML report in a headless browser.
if [[ ",$EXTRAS," == *",dev,"* ]]; then APT_PACKAGES+=(chromium); fi
# The fleet audit store's tests start a real PostgreSQL server (initdb, pg_ctl).
if [[ ",$EXTRAS," == *",postgres,"* ]]; then APT_PACKAGES+=(postgresql); fi

need_apt=0
for tool in swtpm swtpm_setup tpm2_checkquote pkg-config gcc; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if [[ ",$EXTRAS," == *",dev,"* ]]; then command -v chromium >/dev/null 2>&1 || need_apt=1; fi
if [[ ",$EXTRAS," == *",postgres,"* ]]; then compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need_apt=1; fi
pkg-config --exists tss2-esys 2>/dev/null || need_apt=1
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need_apt=1

if [ "$need_apt" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else SUDO=(none); fi
  if [ "${SUDO[0]:-}" = none ]; then
    echo "bootstrap: cannot install ${APT_PACKAGES[*]} (not root, no sudo); continuing without them" >&2
  else
    echo "bootstrap: installing ${APT_PACKAGES[*]}" >&2
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! pkg-config --exists tss2-esys 2>/dev/null; then
  EXTRAS="$(echo "$EXTRAS" | tr ',' '\n' | grep -vx tpm | paste -sd, -)"
  echo "bootstrap: no TSS library; installing without the 'tpm' extra" >&2
fi
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
