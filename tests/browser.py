"""Headless Chromium for the page tests: the DOM a real browser builds, and screenshots.

Debian's `chromium` runs as root only without its sandbox; every call gets a fresh profile
directory so parallel calls do not share one, and background networking is off so the browser
fetches nothing but the page (the pages must work offline).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

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


# Measures the laid-out page in the browser (the test's own script, run on a local copy of the
# page: the served pages allow no script) and writes the findings into the DOM for --dump-dom.
_LAYOUT_SCRIPT = r"""
<script>(function () {
  var r = {viewport: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
           chartText: [], wrapped: [], names: [], numbers: 0};
  r.overflow = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var box = el.getBoundingClientRect();
    if (box.right > r.viewport + 0.5 && !el.parentNode.closest(".scroll, svg") &&
        !el.closest(".scroll *, svg *")) {
      r.overflow.push(el.tagName + "." + el.className + ": " + el.textContent.slice(0, 60));
    }
  });
  document.querySelectorAll("svg.chart").forEach(function (svg) {
    var scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    svg.querySelectorAll("text").forEach(function (t) {
      r.chartText.push([t.textContent, parseFloat(getComputedStyle(t).fontSize) * scale]);
    });
  });
  function lines(node, start, end) {
    var range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, end);
    var tops = {};
    Array.prototype.forEach.call(range.getClientRects(), function (c) {
      if (c.width > 0) tops[Math.round(c.bottom)] = 1;
    });
    return Object.keys(tops).length;
  }
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, null);
  var number = /(?<![\w\-\/.])[-+]?\d[\d.,:\-]*(?:%|\u00a0[^\s,;)]+)?/g;
  while (walker.nextNode()) {
    var n = walker.currentNode;
    if (n.parentNode.closest("svg, style, script")) continue;
    var m;
    number.lastIndex = 0;
    while ((m = number.exec(n.data))) {
      r.numbers += 1;
      if (lines(n, m.index, m.index + m[0].length) > 1) r.wrapped.push(m[0]);
    }
  }
  document.querySelectorAll("td.name, td.name *").forEach(function (el) {
    el.childNodes.forEach(function (c) {
      if (c.nodeType === 3 && c.data && lines(c, 0, c.data.length) > 1) r.names.push(c.data);
    });
  });
  parent.postMessage(JSON.stringify(r), "*");
})();</script>
"""
# Chromium's windows are at least 500 px wide: a phone's width is an iframe of that width.
_FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="border:0;width:{width}px;height:900px"></iframe>
<script>window.addEventListener("message", function (e) {{
  var out = document.createElement("pre");
  out.id = "layout-report";
  out.textContent = e.data;
  document.body.appendChild(out);
}});</script></body></html>
"""


def layout(chromium: Chromium, html: str, width: int, tmp: Path) -> dict[str, Any]:
    """How the page lays out at `width` CSS px: the viewport and the document's scroll width,
    each chart text's rendered size in CSS px, numbers and table names that wrap."""
    page = tmp / f"layout-{width}.html"
    page.write_text(html.replace("</body>", _LAYOUT_SCRIPT + "</body>"))
    frame = tmp / f"frame-{width}.html"
    frame.write_text(_FRAME.format(src=page.name, width=width))
    dom = parse_dom(chromium._run(f"--window-size={max(width, 500) + 20},1000",
                                  "--virtual-time-budget=10000", "--allow-file-access-from-files",
                                  "--dump-dom", frame.as_uri()))
    report: dict[str, Any] = json.loads(dom.find("pre", id="layout-report").text)
    return report
