"""Headless Chromium for the page tests: the DOM a real browser builds, and screenshots.

Debian's `chromium` runs as root only without its sandbox; every call gets a fresh profile
directory so parallel calls do not share one, and background networking is off so the browser
fetches nothing but the page (the pages must work offline).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from helpers import require_tool

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    text: str = ""  # text of the element and its descendants
    children: list[Element] = field(default_factory=list)

    def ancestor(self, **attrs: str) -> Element | None:
        """The nearest enclosing element having all `attrs`."""
        node = self.parent
        while node is not None and any(node.attrs.get(k) != v for k, v in attrs.items()):
            node = node.parent
        return node

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        out = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                    child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(child)
            out.extend(child.find_all(tag, **attrs))
        return out

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.open: list[Element] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs}, self.open[-1])
        self.open[-1].children.append(el)
        if tag not in VOID:
            self.open.append(el)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, 0, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        for el in self.open:
            el.text += data


def parse_dom(html: str) -> Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


class Chromium:
    def __init__(self) -> None:
        self.path = require_tool("chromium", "chromium")

    def _run(self, *args: str) -> str:
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            done = subprocess.run([self.path, *FLAGS, f"--user-data-dir={profile}", *args],
                                  capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
        return done.stdout

    def dom(self, url: str) -> Element:
        """The document after the browser loaded `url` (no script runs on these pages)."""
        return parse_dom(self._run("--dump-dom", url))

    def screenshot(self, url: str, path: Path, width: int = 1100, height: int = 1400) -> None:
        self._run(f"--screenshot={path}", f"--window-size={width},{height}", url)
        assert path.is_file() and path.stat().st_size > 0, f"no screenshot at {path}"
