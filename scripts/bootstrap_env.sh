#!/usr/bin/env bash
# Build (once) and print the cached virtual environment for this checkout.
#
# The venv lives outside the clone, keyed by a hash of the pins (requirements*.txt), the Python
# version and this script, so CI and repeated runs reuse it and any pin change builds a new one.
# A venv is only used once its ".complete" marker exists, so an interrupted build is redone.
# The project itself is installed editable (--no-deps) into it, re-done when the checkout path or
# pyproject.toml changes.
#
#   scripts/bootstrap_env.sh          build if needed, print the venv path on stdout
#   scripts/bootstrap_env.sh --path   print the path only, build nothing
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${MM_LIVE_PYTHON:-$(command -v python3.11 || command -v python3)}
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=$(cat requirements.txt requirements-dev.txt scripts/bootstrap_env.sh | { cat; echo "py$pyver"; } | sha256sum | cut -c1-16)
cache=${MM_LIVE_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mm-live}
venv="$cache/venv-$key"
if [ "${1:-}" = "--path" ]; then echo "$venv"; exit 0; fi

mkdir -p "$cache"
# One builder at a time: parallel `make` runs (or test helpers) wait here instead of racing.
exec 9>"$cache/.lock-$key"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "mm-live: building the environment in $venv (first time only, ~2-3 min)" >&2
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r requirements.txt -r requirements-dev.txt >&2
  touch "$venv/.complete"
fi

stamp="$root $(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$venv/.mm-live-editable" 2>/dev/null)" != "$stamp" ] || ! "$venv/bin/python" -c 'import mm_live.encoders' 2>/dev/null; then
  log="$venv/.editable-install.log"
  if ! "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" >"$log" 2>&1; then
    cat "$log" >&2; echo "mm-live: editable install failed (log above)" >&2; exit 1
  fi
  echo "$stamp" > "$venv/.mm-live-editable"
fi
flock -u 9
echo "$venv"
