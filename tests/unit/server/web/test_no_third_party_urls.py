"""The dashboard's own files name no third-party URL (issue 8: nothing leaves the plant).

Templates, scripts and stylesheets under ``server/web`` (not ``static/vendor``, which npm
fills at build time) may link to nothing but their own server. Documentation links in
comments are allowed: a browser never fetches a comment. XML namespace names (the SVG
``xmlns``) are identifiers, not addresses.
"""

from __future__ import annotations

import re
from pathlib import Path

from shopfloor.server.web import STATIC_DIR, TEMPLATES_DIR

URL = re.compile(r"""(?:https?:|wss?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)<>]*""")
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
COMMENTS = {
    ".js": re.compile(r"/\*.*?\*/|(?<![:\\\"'])//[^\n]*", re.S),
    ".css": re.compile(r"/\*.*?\*/", re.S),
    ".html": re.compile(r"<!--.*?-->|\{#.*?#\}", re.S),
    ".svg": re.compile(r"<!--.*?-->", re.S),
}


def _own_files() -> list[Path]:
    files = [*TEMPLATES_DIR.rglob("*.html")]
    files += [f for f in STATIC_DIR.rglob("*") if f.suffix in COMMENTS and "vendor" not in f.parts]
    return sorted(files)


def third_party_urls(text: str, suffix: str) -> list[str]:
    """URLs in ``text`` outside comments, namespaces excepted."""
    code = COMMENTS[suffix].sub("", text)
    return [url for url in URL.findall(code) if url not in NAMESPACES]


def test_the_scanner_finds_what_it_should() -> None:
    js = 'import x from "https://cdn.example.com/x.js"; // see https://docs.example.org/\n'
    assert third_party_urls(js, ".js") == ["https://cdn.example.com/x.js"]
    html = '<!-- https://example.org/ --><link href="//fonts.example.com/a.css">{# http://x.io #}'
    assert third_party_urls(html, ".html") == ["//fonts.example.com/a.css"]
    css = "/* https://a.example.com */ a { background: url(https://b.example.com/i.png); }"
    assert third_party_urls(css, ".css") == ["https://b.example.com/i.png"]


def test_own_templates_scripts_and_styles_name_no_third_party() -> None:
    files = _own_files()
    assert any(f.suffix == ".js" for f in files)
    assert any(f.suffix == ".html" for f in files)
    found = {
        str(f.relative_to(STATIC_DIR.parent)): urls
        for f in files
        if (urls := third_party_urls(f.read_text(errors="replace"), f.suffix))
    }
    assert found == {}
