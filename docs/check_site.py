"""Check a built documentation site: it loads nothing from the network, and its math renders offline.

Usage (after ``sphinx-build -W docs docs/_build/html``)::

    python docs/check_site.py docs/_build/html            # the checks below
    python docs/check_site.py --render docs/_build/html   # and typeset all math with the site's MathJax (Node.js)

Exits with status 1 and one line per problem when:

- a page loads a resource (``<script src>``, ``<link href>`` of a stylesheet,
  icon or preload, ``<img src>``, ``<source src>``, ``<iframe src>``) from
  an absolute URL, or names a CDN (jsDelivr, cdnjs, unpkg, MathJax's
  ``mathjax@``) anywhere in its HTML;
- a stylesheet under ``_static`` imports or points ``url(...)`` to the network;
- a local resource a page loads is missing from the site;
- a page with math does not load MathJax from the site's own
  ``_static/mathjax/`` (shipped by ``sphinx-mathjax-offline``), or the
  MathJax files it needs (the loader and the CommonHTML fonts) are missing;
- the derivation has fewer than ``MIN_NUMBERED_EQUATIONS`` numbered equations;
- with ``--render``: an expression of any page fails to typeset when the
  site's own MathJax (``_static/mathjax``, loaded from disk by Node.js, no
  network) renders it to CommonHTML: an undefined macro, unbalanced braces.

Links (``<a href>``) to other sites are fine: following one is the reader's
choice, not something a page fetches while it renders.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

CDN = re.compile(r"cdn\.jsdelivr|jsdelivr\.net|cdnjs|unpkg\.com|mathjax@|polyfill\.io|googleapis|gstatic", re.I)
MATHJAX = "_static/mathjax/tex-chtml.js"
MATHJAX_FILES = ("_static/mathjax/tex-chtml.js", "_static/mathjax/output/chtml/fonts/woff-v2")
MIN_NUMBERED_EQUATIONS = 20
# Resource-loading (tag, attribute) pairs; <link> only for the rel values below.
LOADS = {("script", "src"), ("img", "src"), ("source", "src"), ("iframe", "src"), ("link", "href")}
LINK_RELS = {"stylesheet", "preload", "icon", "shortcut", "apple-touch-icon", "modulepreload"}


class Resources(HTMLParser):
    """The URLs a page loads, whether it has math, and how many equation numbers it shows."""

    def __init__(self):
        super().__init__()
        self.urls, self.has_math, self.equation_numbers = [], False, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "math" in classes:
            self.has_math = True
        if tag == "span" and "eqno" in classes:
            self.equation_numbers += 1
        for t, attribute in LOADS:
            if tag == t and attrs.get(attribute):
                if tag == "link" and not LINK_RELS & set((attrs.get("rel") or "").lower().split()):
                    continue
                self.urls.append(attrs[attribute])


def is_remote(url):
    parts = urlsplit(url)
    return bool(parts.scheme in ("http", "https") or (not parts.scheme and parts.netloc))


def site_pages(site):
    """The site's HTML pages (not the theme's template fragments under _static)."""
    return sorted(p for p in site.rglob("*.html") if p.relative_to(site).parts[0] not in ("_static", "_sources"))


def check(site):
    site = Path(site)
    problems = []
    pages = site_pages(site)
    if not pages:
        return [f"{site}: no HTML pages (build the site first)"]
    for name in MATHJAX_FILES:
        if not (site / name).exists():
            problems.append(f"{site / name}: missing (sphinx-mathjax-offline ships MathJax into _static)")
    for page in pages:
        rel = page.relative_to(site)
        text = page.read_text(encoding="utf-8")
        for match in CDN.finditer(text):
            problems.append(f"{rel}: names a CDN: ...{text[max(0, match.start() - 40):match.end() + 40]}...")
        parser = Resources()
        parser.feed(text)
        loaded_local = set()
        for url in parser.urls:
            if url.startswith("data:"):
                continue
            if is_remote(url):
                problems.append(f"{rel}: loads {url} from the network")
                continue
            target = (page.parent / unquote(urlsplit(url).path)).resolve()
            if not target.exists():
                problems.append(f"{rel}: loads {url}, which is not in the site")
            loaded_local.add(target)
        if parser.has_math and (site / MATHJAX).resolve() not in loaded_local:
            problems.append(f"{rel}: has math but does not load the site's own {MATHJAX}")
        if rel.as_posix() == "derivation.html" and parser.equation_numbers < MIN_NUMBERED_EQUATIONS:
            problems.append(f"{rel}: {parser.equation_numbers} numbered equations, fewer than {MIN_NUMBERED_EQUATIONS}")
    if not (site / "derivation.html").exists():
        problems.append(f"{site}: no derivation.html")
    for css in sorted((site / "_static").rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"@import\s+(?:url\()?['\"]?(?:https?:)?//|url\(\s*['\"]?(?:https?:)?//", text):
            where = text[match.start():match.end() + 60]
            problems.append(f"{css.relative_to(site)}: fetches from the network: {where}")
    return problems


# Typesets every expression with the site's MathJax 3 in Node.js; prints one line per failure.
RENDER_JS = r"""
const path = require("path"), fs = require("fs");
global.MathJax = {
  loader: {paths: {mathjax: process.argv[2]}, load: ["input/tex-full", "adaptors/liteDOM", "output/chtml"],
           require: require},
  // every package of the site's MathJax, less the two that turn errors into red text
  tex: {packages: {"[-]": ["noundefined", "noerrors"]}, formatError: (jax, err) => { throw err; }},
  startup: {typeset: false},
};
require(path.join(process.argv[2], "startup.js"));
MathJax.startup.promise.then(() => {
  const expressions = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
  let failed = 0;
  for (const [where, display, tex] of expressions) {
    try { MathJax.tex2chtml(tex, {display: display}); }
    catch (err) {
      failed++;
      console.log(where + ": MathJax cannot typeset " + JSON.stringify(tex.slice(0, 80)) + ": " + err.message);
    }
  }
  console.log("typeset " + (expressions.length - failed) + " of " + expressions.length + " expressions");
  process.exit(failed ? 1 : 0);
}).catch((err) => { console.log("MathJax did not start: " + err); process.exit(1); });
"""
MATH_ELEMENT = re.compile(r'<(div|span) class="math notranslate nohighlight"[^>]*>(.*?)</\1>', re.S)
EQUATION_NUMBER = re.compile(r'<span class="eqno">.*?</span>\s*</span>|<span class="eqno">.*?</a>\s*</span>', re.S)


def math_expressions(site):
    """``[(page, display, tex), ...]`` of every math element of the site's pages."""
    out = []
    for page in site_pages(site):
        text = EQUATION_NUMBER.sub("", page.read_text(encoding="utf-8"))
        for match in MATH_ELEMENT.finditer(text):
            tex = html.unescape(re.sub(r"<[^>]+>", "", match.group(2))).strip()
            display = not tex.startswith("\\(")
            if tex[:2] in ("\\(", "\\["):
                tex = tex[2:-2]
            out.append((page.relative_to(site).as_posix(), display, tex))
    return out


def render(site):
    """Problems of typesetting every expression with the site's MathJax (needs ``node``)."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        return ["--render needs Node.js (node) on the PATH"]
    expressions = math_expressions(site)
    if not expressions:
        return [f"{site}: no math found to typeset"]
    with tempfile.TemporaryDirectory() as tmp:
        script, data = Path(tmp) / "render.js", Path(tmp) / "math.json"
        script.write_text(RENDER_JS)
        data.write_text(json.dumps(expressions))
        result = subprocess.run([node, str(script), str((site / "_static" / "mathjax").resolve()), str(data)],
                                capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).strip().splitlines()
    if result.returncode != 0:
        return lines or [f"node exited with status {result.returncode}"]
    print(lines[-1] if lines else "")
    return []


def main(argv):
    do_render = "--render" in argv
    argv = [a for a in argv if a != "--render"]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(argv[0])
    if do_render and not problems:
        problems = render(Path(argv[0]))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    pages = len(site_pages(Path(argv[0])))
    print(f"{argv[0]}: {pages} pages, nothing loaded from the network, MathJax served from {MATHJAX}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
