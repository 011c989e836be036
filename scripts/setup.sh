#!/usr/bin/env bash
# Set up a fresh Debian machine for the demo or the tests: Python venv in .venv and, for the
# tests, Debian's prometheus/promtool, amtool (prometheus-alertmanager), docker-compose,
# chromium (headless page tests), victoria-metrics (remote_write test) and wrk (load test).
# Safe to run again: it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

if [ "$what" = test ]; then
  missing=()
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
  command -v wrk >/dev/null || missing+=(wrk)
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
  fi
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extra=demo; [ "$what" = test ] && extra=test
stamp=".venv/.installed-$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra]"
  touch "$stamp"
fi
