#!/usr/bin/env bash
# Set up a fresh Debian machine for the demo or the tests: Python venv in .venv and, for the
# tests, Debian's prometheus/promtool, amtool (prometheus-alertmanager), docker-compose,
# chromium (headless page tests), victoria-metrics (remote_write test), wrk (load test), and
# docker.io with busybox-static (a real Docker Engine and a static busybox for test images).
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
  command -v dockerd >/dev/null || missing+=(docker.io)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || missing+=(busybox-static)
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
# The venv follows the lock: requirements/demo.txt or requirements/test.txt (`make lock` makes
# them from pyproject.toml). It is synced whenever the lock or pyproject.toml changed, or whenever
# what is installed is not what the last sync installed (a package upgraded or added by hand).
# An unchanged venv costs one `pip freeze` (about half a second).
set_name=demo; [ "$what" = test ] && set_name=test
lock="requirements/$set_name.txt"
stamp=".venv/.synced-$set_name"
pip=(.venv/bin/python -m pip --disable-pip-version-check)
want="$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(head -n1 "$stamp")" != "$want" ] \
   || [ "$(tail -n +2 "$stamp")" != "$("${pip[@]}" freeze --exclude-editable)" ]; then
  echo "setup: syncing .venv with $lock"
  "${pip[@]}" install -q --require-hashes --no-deps -r "$lock"
  locked="$(sed -nE 's/^([A-Za-z0-9._-]+)(\[[^]]*\])?==.*/\1/p' "$lock" | tr 'A-Z_.' 'a-z--' | sort -u)"
  extra="$("${pip[@]}" freeze --exclude-editable | sed -nE 's/^([A-Za-z0-9._-]+)==.*/\1/p' \
    | tr 'A-Z_.' 'a-z--' | sort -u | comm -23 - <(echo "$locked"))"
  if [ -n "$extra" ]; then
    echo "setup: removing packages the lock does not name: $(echo $extra)"
    "${pip[@]}" uninstall -q -y $extra
  fi
  "${pip[@]}" install -q --no-deps -e .
  { echo "$want"; "${pip[@]}" freeze --exclude-editable; } > "$stamp"
fi
