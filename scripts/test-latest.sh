#!/usr/bin/env bash
# The early warning for upgrades (`make test-latest`): the whole suite in a throwaway venv with
# the newest versions that pyproject.toml's ranges allow, ignoring the lock. It prints what differs
# from the lock first, then pytest's result; it changes nothing in the checkout. When it passes,
# `make lock UPGRADE=1` moves the lock forward (then `make test`, and commit requirements/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test >/dev/null  # Debian packages, and the locked venv for the comparison
python="${PYTHON:-python3}"
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade -e ".[demo,test]"
echo "test-latest: versions that differ from requirements/test.txt (locked -> newest):"
"$venv/bin/python" - requirements/test.txt <<'PY'
import re
import sys
from importlib.metadata import distributions

locked = {}
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^]]*\])?==([^ ;\\]+)", line)
    if m:
        locked.setdefault(re.sub(r"[-_.]+", "-", m[1]).lower(), m[2])
newest = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in distributions()}
changed = [(n, v, newest[n]) for n, v in sorted(locked.items()) if n in newest and newest[n] != v]
for name, old, new in changed:
    print(f"  {name}: {old} -> {new}")
if not changed:
    print("  none: the lock is the newest")
PY
# The one test that pins the venv to the lock is the point of difference here, not a failure.
"$venv/bin/python" -m pytest -q -p no:cacheprovider \
  --deselect tests/test_lock.py::test_the_venv_running_the_tests_is_the_locked_test_set "$@"
