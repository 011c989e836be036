"""What README and docs/ tell a reader to run exists: every `make` target, pip extra,
`deepracer-exporter` subcommand and option, repository path and local link."""

from __future__ import annotations

import glob
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Code as a reader copies it: inline `code` and fenced blocks.
CODE = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.S)


def code(path: Path) -> list[str]:
    return [m[0] or m[1] for m in CODE.findall(path.read_text())]


def snippets() -> list[tuple[str, str]]:
    return [(p.relative_to(REPO).as_posix(), c) for p in DOCS for c in code(p)]


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.M))


def test_every_make_target_named_exists() -> None:
    targets = makefile_targets()
    named = {(where, t) for where, c in snippets() for t in re.findall(r"\bmake ([\w-]+)", c)}
    assert named, "no make target found in the docs"
    assert {(w, t) for w, t in named if t not in targets} == set()


def test_every_pip_extra_named_exists() -> None:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    named = set()
    for path in DOCS:
        text = path.read_text()
        named |= {(path.name, e) for e in re.findall(r"pip install[^\n`]*\.\[([\w,-]+)\]", text)}
        named |= {(path.name, e) for e in re.findall(r"add `\[([\w-]+)\]`", text)}
    assert named, "no pip extra found in the docs"
    assert {(w, e) for w, e in named for x in e.split(",") if x not in extras} == set()


def _help(*subcommand: str) -> str:
    done = subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", *subcommand,
                           "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_command_and_option_named_exists() -> None:
    helps = {sub: _help(*([sub] if sub else [])) for sub in ("", "check", "demo", "simulate")}
    problems = []
    seen = 0
    for where, snippet in snippets():
        for line in snippet.replace("\\\n", " ").splitlines():
            for m in re.finditer(r"deepracer-exporter((?: +[^ |;&)#]+)*)", line):
                if line[:m.start()].rstrip().endswith(":"):
                    continue  # a name, not a command (job_name: deepracer-exporter)
                words = m[1].split()
                sub = words[0] if words and words[0] in helps else ""
                if words and not sub and not words[0].startswith("-") and words[0] != "...":
                    problems.append(f"{where}: unknown subcommand {words[0]!r} in {line!r}")
                    continue
                seen += 1
                for option in (w.split("=")[0] for w in words if w.startswith("--")):
                    if option not in helps[sub]:
                        problems.append(f"{where}: {option} not an option of "
                                        f"'deepracer-exporter {sub}': {line!r}")
    assert seen > 10
    assert problems == []


REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|deploy|prometheus|grafana|tests|bench|scripts|"
                       r"exporter)/[\w./*<>-]*[\w*])")


def test_every_repository_path_named_exists() -> None:
    missing = []
    for where, snippet in snippets():
        for path in REPO_PATH.findall(snippet):
            if "<" in path or path.startswith("deploy/secrets/") or f"{path}:" in snippet:
                continue  # a pattern (docs/<name>.md), a file you create, an image name
            if not glob.glob(str(REPO / path)):
                missing.append(f"{where}: {path}")
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_local_link_resolves(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        if not (doc.parent / target).exists():
            broken.append(target)
    assert broken == []
