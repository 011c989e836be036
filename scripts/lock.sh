#!/usr/bin/env bash
# Regenerate the locked, hashed dependency sets in requirements/ from pyproject.toml's ranges
# (`make lock`). runtime.txt is compiled first and constrains the other two, so a package shared
# by the sets has one version everywhere. `--universal` keeps the markers for other platforms
# (the Docker image may be arm64); every artifact's hash is recorded, so pip installs them with
# --require-hashes and refuses anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-.venv/bin/uv}"
upgrade=()
[ "${UPGRADE:-}" = 1 ] && upgrade=(--upgrade)
compile() {
  local out="$1"; shift
  "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-strip-extras --custom-compile-command "make lock" ${upgrade[@]+"${upgrade[@]}"} \
    --output-file "requirements/$out" pyproject.toml "$@"
}
compile runtime.txt
compile demo.txt --extra demo --constraint requirements/runtime.txt
compile test.txt --extra demo --extra test --constraint requirements/runtime.txt
