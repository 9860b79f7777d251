"""The dashboard's gettext catalogues: complete, up to date with the JS tables, maintained
by `shopfloor i18n`, served as JSON equal to the .po, and used to render the pages."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po
from fastapi import FastAPI
from typer.testing import CliRunner

from shopfloor.cli import app as cli_app
from shopfloor.server.web import STATIC_DIR, TEMPLATES_DIR, catalogue, router
from shopfloor.server.web import catalogue_tools as tools
from shopfloor.server.web.jstables import StringTableError, read_module
from shopfloor.testing.auth import grant

WEB_DIR = STATIC_DIR.parent
PO_ZH = WEB_DIR / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
STRING_MODULES = [STATIC_DIR / "js" / "i18n.js", *sorted(STATIC_DIR.glob("js/strings/*.js"))]
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _po(path: Path = PO_ZH) -> Catalog:
    with path.open("rb") as fileobj:
        return read_po(fileobj)


def _english_table(module: Path) -> dict[str, str]:
    """The `en` table of a module, read by a regex of its own (not the tool's parser)."""
    text = module.read_text(encoding="utf-8")
    start = re.search(r"^\s*en: \{$", text, re.M)
    assert start, f"no en table in {module.name}"
    end = text.index("\n  },", start.end())
    return dict(re.findall(r'^\s*"([\w.]+)": "(.*)",$', text[start.end() : end], re.M))


def _english() -> dict[str, str]:
    strings: dict[str, str] = {}
    for module in STRING_MODULES:
        strings |= _english_table(module)
    return strings


@pytest.fixture
def web_copy(tmp_path: Path) -> Path:
    """The strings' sources (JS modules, templates, catalogues) in a temporary folder."""
    shutil.copytree(STATIC_DIR / "js", tmp_path / "static" / "js")
    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    shutil.copytree(WEB_DIR / "locale", tmp_path / "locale")
    return tmp_path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, ["i18n", *args])
    return result.exit_code, result.output


def _add_english(web: Path, module: str, key: str, text: str) -> None:
    path = web / "static" / "js" / "strings" / module
    source = path.read_text("utf-8")
    path.write_text(source.replace("  en: {\n", f'  en: {{\n    "{key}": "{text}",\n', 1), "utf-8")


# The shipped catalogue


def test_every_english_string_has_a_checked_chinese_translation() -> None:
    english = _english()
    assert len(english) > 350, "the en tables were not read"
    messages = {str(m.context): m for m in _po() if m.id}
    for key, text in english.items():
        message = messages.get(key)
        assert message is not None, f"{key} is not in the zh_CN catalogue"
        assert message.id == text, f"{key}: the catalogue translates {message.id!r}"
        assert message.string, f"{key} is not translated"
        assert not message.fuzzy, f"{key} is fuzzy"
        assert set(PLACEHOLDER.findall(str(message.string))) == set(PLACEHOLDER.findall(text)), key
    assert set(messages) == set(english), "the catalogue has keys no module has"


def test_no_module_keeps_a_translation_table() -> None:
    for module in STRING_MODULES:
        assert set(read_module(module).tables) == {"en"}, f"{module.name}: run i18n migrate"


def test_the_shipped_sources_pass_the_check_command() -> None:
    code, output = _cli("check")
    assert code == 0, output
    assert "complete and up to date" in output


def test_pot_holds_one_message_per_key_with_the_english_text() -> None:
    pot = _po(WEB_DIR / "locale" / "messages.pot")
    got = {str(m.context): str(m.id) for m in pot if m.id}
    assert got == _english()
    assert all(not m.string for m in pot if m.id)


# The tools on a copy


def test_check_fails_when_a_key_is_added_without_extract(web_copy: Path) -> None:
    _add_english(web_copy, "overview.js", "overview.newThing", "A new {thing}")
    code, output = _cli("check", "--web-dir", str(web_copy))
    assert code == 1
    assert "messages.pot is out of date" in output
    assert "overview.newThing is missing" in output

    code, output = _cli("update", "--web-dir", str(web_copy))
    assert code == 0, output
    assert "zh_CN: 1 strings to translate" in output
    new = _po(web_copy / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po").get(
        "A new {thing}", context="overview.newThing"
    )
    assert new is not None
    assert new.string == ""
    code, output = _cli("check", "--web-dir", str(web_copy))
    assert code == 1
    assert "overview.newThing is not translated" in output
    assert "out of date" not in output

    _translate(web_copy, "overview.newThing", "新的 {thing}")
    assert tools.check(tools.Sources(web_copy)).ok


def test_check_fails_on_a_translation_that_drops_a_placeholder(web_copy: Path) -> None:
    _translate(web_copy, "alarms.summary", "报警")
    problems = tools.check(tools.Sources(web_copy)).problems
    assert problems == [
        "locale/zh_CN/LC_MESSAGES/messages.po: alarms.summary has placeholders [],"
        " the English ['standing', 'waiting']"
    ]


def test_update_keeps_a_reworded_string_fuzzy_and_a_removed_one_obsolete(web_copy: Path) -> None:
    module = web_copy / "static" / "js" / "strings" / "trends.js"
    text = module.read_text("utf-8")
    text = text.replace('"trends.zoomOut": "Zoom out"', '"trends.zoomOut": "Zoom all the way out"')
    text = re.sub(r'\n\s*"trends.noUnit": "no unit",', "", text)
    module.write_text(text, "utf-8")
    tools.update(tools.Sources(web_copy))
    po_file = web_copy / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
    po = _po(po_file)
    reworded = po.get("Zoom all the way out", context="trends.zoomOut")
    assert reworded is not None
    assert reworded.string == "缩小", "the old translation stays as a suggestion"
    assert reworded.fuzzy
    assert '#| msgid "Zoom out"' in po_file.read_text("utf-8")
    assert po.get("no unit", context="trends.noUnit") is None
    assert ("no unit", "trends.noUnit") in po.obsolete
    problems = tools.check(tools.Sources(web_copy)).problems
    assert any("trends.zoomOut is fuzzy" in p for p in problems)

    # The string comes back: so does its translation.
    module.write_text(text.replace("  en: {\n", '  en: {\n    "trends.noUnit": "no unit",\n'))
    tools.update(tools.Sources(web_copy))
    back = _po(po_file).get("no unit", context="trends.noUnit")
    assert back is not None
    assert back.string == "无单位"
    assert not back.fuzzy


def test_migrate_moves_old_style_tables_and_can_run_again(web_copy: Path) -> None:
    # How another branch adds a page today: an en and a zh-CN table in its module.
    admin = web_copy / "static" / "js" / "strings" / "admin.js"
    admin.write_text(
        "// The admin pages' strings.\n\n"
        'import { registerStrings } from "../i18n.js";\n\n'
        "registerStrings({\n"
        "  en: {\n"
        '    "admin.title": "Administration",\n'
        "    // a comment the parser skips\n"
        '    "admin.users": "{n} users",\n'
        "  },\n"
        '  "zh-CN": {\n'
        '    "admin.title": "系统管理",\n'
        '    "admin.users": "{n} 个用户",\n'
        "  },\n"
        "});\n",
        "utf-8",
    )
    # ... and one that changed a translation already moved (its table wins: it is newer).
    machine = web_copy / "static" / "js" / "strings" / "machine.js"
    machine.write_text(
        machine.read_text("utf-8").replace(
            "});\n", '  "zh-CN": {\n    "machine.values": "实时数据",\n  },\n});\n'
        ),
        "utf-8",
    )
    assert not tools.check(tools.Sources(web_copy)).ok

    code, output = _cli("migrate", "--web-dir", str(web_copy))
    assert code == 0, output
    assert "moved 3 zh-CN strings" in output
    assert "machine.values: '实时数值' -> '实时数据'" in output
    assert '"zh-CN"' not in admin.read_text("utf-8")
    assert set(read_module(admin).tables) == {"en"}
    assert set(read_module(machine).tables) == {"en"}
    po = _po(web_copy / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po")
    assert po.get("{n} users", context="admin.users").string == "{n} 个用户"  # type: ignore[union-attr]
    assert po.get("Live values", context="machine.values").string == "实时数据"  # type: ignore[union-attr]
    assert tools.check(tools.Sources(web_copy)).ok

    before = {p: p.read_bytes() for p in web_copy.rglob("*") if p.is_file()}
    code, output = _cli("migrate", "--web-dir", str(web_copy))
    assert code == 0, output
    assert "nothing to change" in output
    assert {p: p.read_bytes() for p in web_copy.rglob("*") if p.is_file()} == before


def test_update_starts_a_new_language(web_copy: Path) -> None:
    code, output = _cli("update", "--web-dir", str(web_copy), "--add", "fr")
    assert code == 0, output
    po = _po(web_copy / "locale" / "fr" / "LC_MESSAGES" / "messages.po")
    assert len([m for m in po if m.id]) == len(_english())
    assert f"fr: {len(_english())} strings to translate" in output  # every one of them
    problems = tools.check(tools.Sources(web_copy)).problems
    assert any("fr/LC_MESSAGES/messages.po: menu.live is not translated" in p for p in problems)


def test_an_unknown_language_is_refused_by_name(web_copy: Path) -> None:
    code, output = _cli("update", "--web-dir", str(web_copy), "--add", "xx-Nope")
    assert code == 2
    assert "'xx-Nope' is no language Babel knows" in output
    assert not (web_copy / "locale" / "xx_Nope").exists()


def test_a_template_must_use_the_english_text_of_its_key(web_copy: Path) -> None:
    base = web_copy / "templates" / "base.html"
    base.write_text(
        base.read_text("utf-8").replace(
            'pgettext("menu.trends", "Trends")', 'pgettext("menu.trends", "Trend")'
        ),
        "utf-8",
    )
    problems = tools.check(tools.Sources(web_copy)).problems
    assert len(problems) == 1
    assert re.fullmatch(
        r"templates/base\.html:\d+: pgettext\('menu\.trends'\) says 'Trend', the en table 'Trends'",
        problems[0],
    )


@pytest.mark.parametrize(
    ("table", "line", "error"),
    [
        ('"a.b": `x ${y}`,', 3, "a template literal"),
        ('"a.b": "x" + "y",', 3, "a concatenated string"),
        ('"a.b": "x",\n    "a.b": "y",', 4, "'a.b' is defined twice"),
        ('"a.b": "unterminated,', 3, "unterminated string"),
        ('"a.b": "bad \\u{zz}",', 3, "a bad escape"),
    ],
)
def test_a_table_the_parser_cannot_read_names_file_and_line(
    tmp_path: Path, table: str, line: int, error: str
) -> None:
    module = tmp_path / "x.js"
    module.write_text(f"registerStrings({{\n  en: {{\n    {table}\n  }},\n}});\n", "utf-8")
    with pytest.raises(StringTableError, match=rf"x\.js:{line}: .*{re.escape(error)}"):
        read_module(module)


def test_js_escapes_are_decoded(tmp_path: Path) -> None:
    module = tmp_path / "x.js"
    module.write_text(
        "registerStrings({\n  en: {\n"
        '    "a.quote": "say \\"hi\\"",\n'
        "    'a.single': 'it\\'s \\u00b0C \\u{1F600}',\n"
        "  },\n});\n",
        "utf-8",
    )
    assert read_module(module).tables["en"].strings == {
        "a.quote": 'say "hi"',
        "a.single": "it's °C \U0001f600",
    }


def _translate(web: Path, key: str, text: str) -> None:
    path = web / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
    po = _po(path)
    for message in po:
        if message.context == key:
            message.string = text
            message.flags.discard("fuzzy")
    with path.open("wb") as fileobj:
        write_po(fileobj, po, width=100, include_lineno=False)


# Served and rendered


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=grant(app)
    ) as c:
        yield c


async def test_served_json_equals_the_catalogue(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/i18n/zh-CN.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-cache"
    expected = {str(m.context): str(m.string) for m in _po() if m.id and not m.fuzzy}
    assert response.json() == expected
    assert response.json()["menu.overview"] == "总览"

    again = await client.get(
        "/static/i18n/zh-CN.json", headers={"if-none-match": response.headers["etag"]}
    )
    assert again.status_code == 304
    versioned = await client.get(f"/static/i18n/zh-CN.json?v={response.headers['etag'][1:-1]}")
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    for tag in ("en", "fr", "..%2fzh-CN"):
        assert (await client.get(f"/static/i18n/{tag}.json")).status_code == 404


async def test_page_names_its_catalogue_by_version_and_preloads_it(
    client: httpx.AsyncClient,
) -> None:
    served = await client.get("/static/i18n/zh-CN.json")
    html = (await client.get("/overview?lang=zh-CN")).text
    url = f"/static/i18n/zh-CN.json?v={served.headers['etag'][1:-1]}"
    assert f'<link rel="preload" as="fetch" crossorigin="anonymous" href="{url}">' in html
    assert f'data-catalogues="{{&#34;zh-CN&#34;: &#34;{url}&#34;}}"' in html
    assert 'data-locales="en zh-CN"' in html
    english = (await client.get("/overview?lang=en")).text
    assert "preload" not in english, "English needs no catalogue"


@pytest.mark.parametrize(
    ("headers", "url", "lang"),
    [
        ({}, "/overview", "en"),
        ({}, "/overview?lang=zh-CN", "zh-CN"),
        ({"cookie": "shopfloor_lang=zh-CN"}, "/overview", "zh-CN"),
        ({"cookie": "shopfloor_lang=zh-CN"}, "/overview?lang=en", "en"),
        ({"accept-language": "zh-Hans-CN,zh;q=0.9,en;q=0.8"}, "/overview", "zh-CN"),
        ({"accept-language": "de-DE, en;q=0.5, zh;q=0.4"}, "/overview", "en"),
        ({"accept-language": "zh-TW"}, "/overview", "en"),
        ({"accept-language": "zh-CN", "cookie": "shopfloor_lang=en"}, "/overview", "en"),
        ({"cookie": "shopfloor_lang=klingon"}, "/overview", "en"),
        ({"accept-language": "zh;q=abc, ;;, *, en-GB"}, "/overview", "en"),
        ({"accept-language": "fr;q=0.9, zh-SG;q=0.8"}, "/overview", "zh-CN"),
    ],
)
async def test_page_renders_its_frame_in_the_requested_language(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, lang: str
) -> None:
    client.cookies.clear()
    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    assert "Accept-Language" in response.headers["vary"]
    html = response.text
    assert f'<html lang="{lang}"' in html
    chinese = lang == "zh-CN"
    title = re.search(r"<title[^>]*>(.*?)</title>", html)
    assert title
    assert title.group(1) == ("shopfloor · 工厂总览" if chinese else "shopfloor · plant overview")
    current = re.search(r'<a [^>]*aria-current="page">([^<]*)</a>', html)
    assert current
    assert current.group(1) == ("总览" if chinese else "Overview")
    selected = re.search(r'<option value="([\w-]+)"[^>]* selected>', html)
    assert selected
    assert selected.group(1) == lang


@pytest.mark.parametrize("page", ["/", "/oee", "/trends", "/machines/nope"])
async def test_every_page_title_goes_through_the_catalogue(
    client: httpx.AsyncClient, page: str
) -> None:
    html = (await client.get(page, params={"lang": "zh-CN"})).text
    title = re.search(r"<title[^>]*>(.*?)</title>", html)
    assert title
    assert re.search(r"[\u4e00-\u9fff]", title.group(1)), title.group(1)


def test_every_entry_module_awaits_the_catalogue_before_it_renders() -> None:
    callers = [
        path
        for path in (STATIC_DIR / "js").glob("**/*.js")
        if re.search(r"^[^/\n]*\binitLocale\(\)", path.read_text("utf-8"), re.M)
        and path.name != "i18n.js"
    ]
    assert len(callers) >= 6
    for path in callers:
        for line in re.findall(r"^.*\binitLocale\(\).*$", path.read_text("utf-8"), re.M):
            assert line.strip().startswith("await initLocale()"), f"{path.name}: {line.strip()}"


@pytest.mark.parametrize("page", ["/", "/overview", "/oee", "/trends", "/machines/nope"])
async def test_server_rendered_text_is_in_the_chosen_language(
    client: httpx.AsyncClient, page: str
) -> None:
    translations = {str(m.context): str(m.string) for m in _po() if m.id}
    html = (await client.get(page, params={"lang": "zh-CN"})).text
    texts = re.findall(r'data-i18n="([\w.]+)"[^>]*>([^<]+)<', html)
    assert len(texts) >= 3
    for key, text in texts:
        assert text.strip() == translations[key], key
    for kind, key, text in re.findall(
        r'data-i18n-(placeholder|aria-label)="([\w.]+)"[^>]*?\b(?:placeholder|aria-label)="([^"]*)"',
        html,
    ):
        assert text == translations[key], (kind, key)


def test_a_fuzzy_or_empty_translation_is_left_out_so_english_shows(web_copy: Path) -> None:
    path = web_copy / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
    po = _po(path)
    for message in po:
        if message.context == "menu.trends":
            message.flags.add("fuzzy")
        if message.context == "menu.oee":
            message.string = ""
    with path.open("wb") as fileobj:
        write_po(fileobj, po, width=100, include_lineno=False)
    found = catalogue.compiled("zh-CN", web_copy / "locale")
    assert found is not None
    strings = json.loads(found.json)
    assert "menu.trends" not in strings
    assert "menu.oee" not in strings
    assert strings["menu.live"] == "实时"
    assert found.translations.pgettext("menu.trends", "Trends") == "Trends"
    assert found.translations.pgettext("menu.live", "Live") == "实时"
    assert found.translations.pgettext("menu.live", "Live!") == "Live!", "msgid is the English"
