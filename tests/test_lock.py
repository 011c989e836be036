"""The locked dependency sets (requirements/*.txt, `make lock`) against pyproject.toml, the venv the
tests run in, and what exporter/Dockerfile installs (run for real, outside Docker)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCKS = REPO / "requirements"
SETS = {"runtime": (), "demo": ("demo",), "test": ("demo", "test")}


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def pins(lock: str) -> list[Pin]:
    """A compiled requirements file's entries (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (LOCKS / f"{lock}.txt").read_text())
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, marker = line.partition(";")
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", marker or spec))
        req = Requirement(re.sub(r"\s*--hash=\S+", "", spec).strip())
        marker_text = re.sub(r"\s*--hash=\S+", "", marker).strip()
        [version] = [s.version for s in req.specifier if s.operator == "=="]
        found.append(Pin(canonicalize_name(req.name), version,
                         Marker(marker_text) if marker_text else None, hashes))
    return found


def applicable(lock: str) -> dict[str, str]:
    return {p.name: p.version for p in pins(lock) if p.applies()}


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


@pytest.mark.parametrize("lock", SETS)
def test_every_declared_dependency_is_pinned_within_its_range_with_hashes(lock: str) -> None:
    locked = pins(lock)
    assert locked, f"requirements/{lock}.txt is empty"
    for pin in locked:
        assert pin.hashes, f"{lock}: {pin.name}=={pin.version} has no hash"
    by_name: dict[str, list[Pin]] = {}
    for pin in locked:
        by_name.setdefault(pin.name, []).append(pin)
    for req in declared(SETS[lock]):
        name = canonicalize_name(req.name)
        assert name in by_name, f"{lock}: {req} is not in the lock (run `make lock`)"
        for pin in by_name[name]:
            assert req.specifier.contains(Version(pin.version), prereleases=True), (
                f"{lock}: {name}=={pin.version} is outside pyproject's {req} (run `make lock`)")


def test_the_sets_agree_on_every_shared_package() -> None:
    runtime = applicable("runtime")
    for lock in ("demo", "test"):
        other = applicable(lock)
        assert {n: v for n, v in other.items() if n in runtime} == runtime, lock
    demo = applicable("demo")
    test = applicable("test")
    assert {n: v for n, v in test.items() if n in demo} == demo


def _installed(python: str) -> dict[str, str]:
    code = ("import json; from importlib.metadata import distributions as d; "
            "print(json.dumps({x.metadata['Name']: x.version for x in d()}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return {canonicalize_name(n): v for n, v in json.loads(out).items()}


def test_the_venv_running_the_tests_is_the_locked_test_set() -> None:
    installed = _installed(sys.executable)
    locked = applicable("test")
    differ = {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v}
    assert not differ, f"venv differs from requirements/test.txt (locked, installed): {differ}"
    unlocked = set(installed) - set(locked) - {"pip", "setuptools", "wheel", "deepracer-exporter"}
    assert not unlocked, f"installed but not locked: {sorted(unlocked)} (./scripts/setup.sh test)"


def _install_steps(dockerfile: str) -> list[list[str]]:
    """Every `pip ...` and `cp ...` command of the Dockerfile's RUN instructions, in order."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    steps = []
    for line in joined.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2 or words[0] != "RUN":
            continue
        for command in re.split(r"&&|;", words[1]):
            argv = [w for w in shlex.split(command) if not w.startswith("--mount=")]
            if argv and argv[0] in ("pip", "cp"):
                steps.append(argv)
    return steps


def test_the_dockerfile_installs_exactly_the_locked_runtime_set(tmp_path: Path) -> None:
    """The Dockerfile's own pip commands, run in order in a fresh venv (its /wheels a temporary
    folder, the build context this checkout): what lands is requirements/runtime.txt and the
    project, nothing else."""
    steps = _install_steps((REPO / "exporter" / "Dockerfile").read_text())
    assert any("download" in s for s in steps) and any("install" in s for s in steps)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for step in steps:
        argv = [a.replace("/wheels", str(wheels)) for a in step]
        argv = [m for a in argv for m in (sorted(map(str, Path("/").glob(a.lstrip("/"))))
                                          if "*" in a else [a])]
        if argv[0] == "pip":
            argv = [python, "-m", "pip", "--disable-pip-version-check", "-q", *argv[1:]]
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout}{done.stderr}"
    installed = _installed(python)
    installed.pop("pip", None)
    installed.pop("setuptools", None)
    assert installed.pop("deepracer-exporter") is not None
    assert installed == applicable("runtime")
