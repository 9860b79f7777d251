"""The dashboard pages and their static files, served by the web router on a bare FastAPI app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from babel.messages.pofile import read_po
from fastapi import FastAPI

from shopfloor.server.api.auth import install_auth
from shopfloor.server.assets import AssetModel
from shopfloor.server.assets.model import Equipment
from shopfloor.server.security import Auth
from shopfloor.server.web import STATIC_DIR, TEMPLATES_DIR, router, routes
from shopfloor.testing.auth import grant

VENDOR_ECHARTS = STATIC_DIR / "vendor" / "echarts.min.js"
JS_TYPE = "text/javascript"
# `import … from "./x.js"`, `import "./x.js"` and `export … from "./x.js"` in our modules.
IMPORT_RE = re.compile(r"""^\s*(?:import|export)\b[^'"]*?['"](\.{1,2}/[^'"]+)['"]""", re.M)


class _Refs(HTMLParser):
    """Collects the tags of a page with their attributes and the text inside scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.script_bodies.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies[-1] += data

    def scripts(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "script"]

    def asset_urls(self) -> list[str]:
        urls = [a["src"] for t, a in self.tags if t == "script" and a.get("src")]
        urls += [a["href"] for t, a in self.tags if t == "link" and a.get("href")]
        return [u for u in urls if u]


def parse(html: str) -> _Refs:
    refs = _Refs()
    refs.feed(html)
    return refs


MACHINE = Equipment(
    path="acme/plant-1/machining/line-1/cell-1/cnc-01",
    id="cnc-01",
    template="cnc-mill",
    area="machining",
    line="line-1",
    cell="cell-1",
    metadata={"description": "CNC machining centre"},
)
# Every page, the machine page of a machine the asset model knows and the 404 page.
PAGES = [
    "/",
    "/login",
    "/overview",
    "/machines/cnc-01",
    "/machines/no-such-machine",
    "/oee",
    "/trends",
    "/admin",
]


class _Context:
    """What the pages read of the server's context: the asset model (no editable plant)."""

    plant = None
    assets = AssetModel(
        enterprise="acme",
        site="plant-1",
        equipment=(MACHINE,),
        tags=(),
        alarm_rules=(),
        templates={},
    )


def page_app() -> FastAPI:
    """The pages alone, behind the API's authentication (an empty in-memory store)."""
    app = FastAPI()
    install_auth(app, Auth(None))
    app.include_router(router)
    app.state.shopfloor = _Context()
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = page_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=grant(app)
    ) as c:
        yield c


async def test_the_page_sends_a_visitor_without_a_login_to_the_login_page() -> None:
    transport = httpx.ASGITransport(app=page_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        response = await c.get("/?tab=alarms")
        static = await c.get("/static/css/app.css")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/%3Ftab%3Dalarms"
    assert static.status_code == 200  # the page's files are public: they hold no data


async def test_the_login_page_is_public_and_loads_its_module_and_styles() -> None:
    transport = httpx.ASGITransport(app=page_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        page = await c.get("/login")
        assert page.status_code == 200
        refs = parse(page.text)
        urls = [urlsplit(u).path for u in refs.asset_urls()]
        assert "/static/js/login.js" in urls
        assert "/static/css/login.css" in urls
        for url in refs.asset_urls():
            assert (await c.get(url)).status_code == 200, url
    assert 'id="login-form"' in page.text
    assert "<script>" not in page.text  # no inline script: the CSP forbids it


@pytest.fixture
def vendor_present() -> None:
    assert VENDOR_ECHARTS.is_file(), f"{VENDOR_ECHARTS} is missing: run 'make web-assets'"


async def test_index_renders_html_with_module_scripts_and_local_echarts(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    refs = parse(response.text)
    sources = [urlsplit(s["src"] or "").path for s in refs.scripts()]
    assert "/static/vendor/echarts.min.js" in sources
    modules = [urlsplit(s["src"] or "").path for s in refs.scripts() if s.get("type") == "module"]
    # nav.js: the shared frame's navigation and language choice.
    assert modules == ["/static/js/nav.js", "/static/js/main.js"]
    # ECharts is a classic script: it must run before the deferred module that uses it.
    assert sources.index("/static/vendor/echarts.min.js") < sources.index("/static/js/main.js")
    echarts_tag = next(s for s in refs.scripts() if "echarts" in (s["src"] or ""))
    assert "defer" in echarts_tag


async def test_every_referenced_file_and_imported_module_is_served(
    client: httpx.AsyncClient, vendor_present: None
) -> None:
    expected_types = {".js": JS_TYPE, ".css": "text/css", ".svg": "image/svg+xml"}
    pending = [url for page in PAGES for url in parse((await client.get(page)).text).asset_urls()]
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        path = urlsplit(url).path
        if path in seen:
            continue
        seen.add(path)
        response = await client.get(url)
        assert response.status_code == 200, f"{url} answered {response.status_code}"
        suffix = path[path.rfind(".") :]
        assert response.headers["content-type"].startswith(expected_types[suffix]), url
        assert response.headers["x-content-type-options"] == "nosniff"
        if path.startswith("/static/js/"):
            # Follow the module graph: a module that imports a missing file breaks the page.
            base = path.rsplit("/", 1)[0]
            for target in IMPORT_RE.findall(response.text):
                parts = (base + "/" + target).split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part not in (".", ""):
                        resolved.append(part)
                pending.append("/" + "/".join(resolved))
    modules = {p for p in seen if p.startswith("/static/js/")}
    on_disk = {"/static/" + str(p.relative_to(STATIC_DIR)) for p in STATIC_DIR.glob("js/**/*.js")}
    assert modules == on_disk, "every module on disk is reachable from a page, and no more"
    assert "/static/vendor/echarts.min.js" in seen


async def test_versioned_urls_are_immutable_and_plain_urls_revalidate(
    client: httpx.AsyncClient,
) -> None:
    refs = parse((await client.get("/")).text)
    css = next(u for u in refs.asset_urls() if urlsplit(u).path == "/static/css/app.css")
    assert "v=" in urlsplit(css).query
    versioned = await client.get(css)
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"

    plain = await client.get("/static/js/api.js")
    assert plain.status_code == 200
    assert plain.headers["cache-control"] == "no-cache"
    etag = plain.headers["etag"]
    again = await client.get("/static/js/api.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["cache-control"] == "no-cache"


def test_version_changes_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "STATIC_DIR", tmp_path)
    monkeypatch.setattr(routes, "_hash_cache", {})
    (tmp_path / "css").mkdir()
    probe = tmp_path / "css" / "probe.css"
    probe.write_bytes(b"a{}")
    first = routes.static_url("css/probe.css")
    assert first == routes.static_url("css/probe.css")
    probe.write_bytes(b"b{color:red}")
    second = routes.static_url("css/probe.css")
    assert first.split("?v=")[0] == second.split("?v=")[0] == "/static/css/probe.css"
    assert first != second
    # A missing file still renders, unversioned, so the browser shows the 404 plainly.
    assert routes.static_url("vendor/absent.js") == "/static/vendor/absent.js"


async def test_head_request_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/static/css/app.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert (
        int(response.headers["content-length"]) == (STATIC_DIR / "css" / "app.css").stat().st_size
    )
    assert response.content == b""


@pytest.mark.parametrize(
    "url",
    [
        "/static/../routes.py",
        "/static/%2e%2e/routes.py",
        "/static/js/../../routes.py",
        "/static/..%2f__init__.py",
        "/static/vendor/.stamp",
        "/static/no-such-file.js",
        "/static/",
        "/static/js",
    ],
)
async def test_static_serves_nothing_outside_its_folder_nor_dot_files(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await client.get(url)
    assert response.status_code == 404, f"{url} answered {response.status_code}"


async def test_asset_urls_follow_the_root_path_behind_a_proxy() -> None:
    app = page_app()
    transport = httpx.ASGITransport(app=app, root_path="/plant")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=grant(app)
    ) as c:
        response = await c.get("/plant/")
    assert response.status_code == 200
    refs = parse(response.text)
    urls = refs.asset_urls()
    assert urls
    assert all(urlsplit(u).path.startswith("/plant/static/") for u in urls), urls
    body = next(a for t, a in refs.tags if t == "body")
    assert body["data-base"] == "/plant"


def _templates() -> list[str]:
    return sorted(p.name for p in TEMPLATES_DIR.glob("*.html"))


def test_templates_exist() -> None:
    assert "index.html" in _templates()


@pytest.mark.parametrize("name", _templates())
def test_template_has_no_inline_code_handlers_styles_or_foreign_urls(name: str) -> None:
    text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
    refs = parse(text)
    for attrs, body in zip(refs.scripts(), refs.script_bodies, strict=True):
        assert attrs.get("src"), f"{name}: a <script> without src (inline code)"
        assert not body.strip(), f"{name}: a <script src> with inline code inside"
    for tag, attrs in refs.tags:
        handlers = [a for a in attrs if a.lower().startswith("on")]
        assert not handlers, f"{name}: <{tag}> has inline handlers {handlers}"
        assert "style" not in attrs, f"{name}: <{tag}> has an inline style attribute"
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), f"{name}: {key}={value}"
            assert not value.startswith("javascript:"), f"{name}: {key}={value}"
    assert not re.search(r"https?://", text), f"{name} names another host"
    assert "<style" not in text.lower(), f"{name} has an inline <style> block"


@pytest.mark.parametrize(
    "path",
    sorted(
        str(p.relative_to(STATIC_DIR))
        for p in [*STATIC_DIR.glob("js/**/*.js"), *STATIC_DIR.glob("css/*.css")]
    ),
)
def test_own_scripts_and_styles_load_nothing_from_other_hosts(path: str) -> None:
    text = (STATIC_DIR / path).read_text(encoding="utf-8")
    assert not re.search(r"https?://|url\(\s*['\"]?//", text), f"{path} names another host"
    assert "eval(" not in text
    assert "new Function" not in text


STRING_MODULES = [STATIC_DIR / "js" / "i18n.js", *sorted(STATIC_DIR.glob("js/strings/*.js"))]
"""i18n.js and each page's own strings module (static/js/strings/, via registerStrings())."""
PO_ZH = STATIC_DIR.parent / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
"""The translations: gettext's msgctxt is the key, msgid the English text."""


def _table(module: Path, locale: str) -> dict[str, str]:
    """The strings of one locale in one module, read as text (the page has no build step)."""
    text = module.read_text(encoding="utf-8")
    start = re.search(rf"^\s*\"?{re.escape(locale)}\"?: \{{$", text, re.M)
    assert start, f"no {locale} table in {module.name}"
    end = text.index("\n  },", start.end())
    return dict(re.findall(r'^\s*"([\w.]+)": "(.*)",$', text[start.end() : end], re.M))


def _catalogue(locale: str) -> dict[str, str]:
    """Every string of one locale, from i18n.js and the pages' string modules."""
    strings: dict[str, str] = {}
    for module in STRING_MODULES:
        strings |= _table(module, locale)
    return strings


def _translations() -> dict[str, str]:
    """The Simplified Chinese catalogue, key (msgctxt) → text, read with Babel."""
    with PO_ZH.open("rb") as fileobj:
        catalog = read_po(fileobj)
    return {str(m.context): str(m.string) for m in catalog if m.id and m.string and not m.fuzzy}


@pytest.mark.parametrize("module", STRING_MODULES, ids=lambda p: p.name)
def test_every_locale_has_every_string(module: Path) -> None:
    english, chinese = _table(module, "en"), _translations()
    assert english, f"the English table of {module.name} was not read"
    assert not set(english) - set(chinese), {"untranslated": sorted(set(english) - set(chinese))}
    for key, text in english.items():
        # A placeholder the translation drops (or invents) shows as "{name}" on the page.
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", chinese[key])), (
            key
        )


def test_no_key_is_defined_by_two_modules() -> None:
    # registerStrings() merges into one table: the module registered last would win.
    owner: dict[str, str] = {}
    for module in STRING_MODULES:
        for key in _table(module, "en"):
            assert key not in owner, f"{key} is in both {owner[key]} and {module.name}"
            owner[key] = module.name


async def test_every_string_the_page_asks_for_exists(client: httpx.AsyncClient) -> None:
    english = _catalogue("en")
    namespaces = {key.split(".")[0] for key in english}
    # The rendered pages: macros and includes build some of their keys.
    wanted: set[str] = set()
    for page in PAGES:
        html = (await client.get(page)).text
        wanted |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="([\w.]+)"', html))
    for module in (STATIC_DIR / "js").glob("**/*.js"):
        if module in STRING_MODULES:
            continue
        for literal in re.findall(r'"([a-z]+(?:\.[A-Za-z0-9]+)+)"', module.read_text("utf-8")):
            if literal.split(".")[0] in namespaces:
                wanted.add(literal)
    assert {"connectors.label", "connectors.state.degraded", "unit.millis"} <= wanted
    assert {"alarms.label", "alarms.action.shelve", "journal.event.shelveExpired"} <= wanted
    missing = sorted(wanted - set(english))
    assert not missing, f"strings without a translation (the page would show the key): {missing}"


async def test_connections_module_is_served_and_wired_into_the_page(
    client: httpx.AsyncClient,
) -> None:
    module = await client.get("/static/js/connections.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith(JS_TYPE)
    assert "export class ConnectionsView" in module.text
    main = (await client.get("/static/js/main.js")).text
    assert "./connections.js" in IMPORT_RE.findall(main)
    # It polls through the shared API client, which knows the endpoint.
    api = (await client.get("/static/js/api.js")).text
    assert '"/api/v1/connectors"' in api

    refs = parse((await client.get("/")).text)
    by_id = {a["id"]: (t, a) for t, a in refs.tags if a.get("id")}
    tag, button = by_id["connectors-btn"]
    assert tag == "button"
    assert button["type"] == "button"
    # Hidden until the server reports a connector; the button says what it opens.
    assert "hidden" in button
    assert button["aria-expanded"] == "false"
    panel_tag, panel = by_id[button["aria-controls"] or ""]
    assert panel_tag == "section"
    assert panel["role"] == "dialog"
    assert "hidden" in panel
    assert panel["aria-labelledby"] in by_id
    assert "tabindex" in panel, "the panel takes the focus when it opens"
    assert by_id["connectors-close"][0] == "button"
    assert by_id["connectors-table"][0] == "table"
