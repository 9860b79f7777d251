"""The PDF rendering of a report: pure, from a gathered :class:`Report` to bytes.

A4 landscape (the OEE table is wide): a title, the period in the plant's zone and UTC,
the notes on omitted sections, then one table per section with the ``brief`` columns
(every column is in the XLSX). fpdf2 writes it in memory without any network access.

Fonts come from the system, never a download: DejaVu Sans when installed (Debian's
``fonts-dejavu-core``) for any Latin, Greek or Cyrillic text in names; a Noto CJK or
WenQuanYi font, when installed, as a fallback so Chinese reason labels print. Without
DejaVu the PDF core font Helvetica is used and characters outside Latin-1 print as
``?``. The report's own labels are English, so it stays readable either way.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.fonts import FontFace

from shopfloor.model.timefmt import format_ns
from shopfloor.server.reports.gather import Cell, Column, Report, Table

__all__ = ["CONTENT_TYPE", "find_fonts", "render_pdf"]

CONTENT_TYPE = "application/pdf"

_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
_UNICODE = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
_CJK = ("NotoSansCJK-Regular.ttc", "NotoSansSC-Regular.otf", "wqy-microhei.ttc", "wqy-zenhei.ttc")


def find_fonts(dirs: tuple[Path, ...] = _FONT_DIRS) -> tuple[Path | None, Path | None, Path | None]:
    """The regular and bold DejaVu Sans files and a CJK font file, where installed."""
    found: dict[str, Path] = {}
    wanted = set(_UNICODE) | set(_CJK)
    for base in dirs:
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            if path.name in wanted and path.name not in found:
                found[path.name] = path
    cjk = next((found[n] for n in _CJK if n in found), None)
    return found.get(_UNICODE[0]), found.get(_UNICODE[1]), cjk


def _text(value: Cell, column: Column) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if column.format == "percent":
        return f"{value:.1%}"
    if column.format == "integer":
        return f"{value:.0f}"
    return f"{value:,.2f}"


class _Pdf(FPDF):
    unicode = False

    def clean(self, text: str) -> str:
        """Text the chosen font can print."""
        if self.unicode:
            return text
        return text.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(size=8)
        self.cell(0, 8, f"{self.page_no()}/{{nb}}", align="C")


def render_pdf(
    report: Report, *, fonts: tuple[Path | None, Path | None, Path | None] | None = None
) -> bytes:
    """The report as a PDF document.

    Args:
        report: the gathered report.
        fonts: the regular, bold and CJK font files (default: :func:`find_fonts`).
    """
    regular, bold, cjk = find_fonts() if fonts is None else fonts
    pdf = _Pdf(orientation="L", unit="mm", format="A4")
    period = report.period
    pdf.set_title(f"shopfloor {period.kind} report {period.label}")
    pdf.set_creator("shopfloor")
    pdf.set_creation_date(datetime.fromtimestamp(report.generated_ns / 1e9, ZoneInfo("UTC")))
    family = "helvetica"
    if regular is not None:
        family = "dejavu"
        pdf.add_font(family, "", str(regular))
        pdf.add_font(family, "B", str(bold or regular))
        pdf.unicode = True
        if cjk is not None:
            pdf.add_font("cjk", "", str(cjk))
            pdf.set_fallback_fonts(["cjk"])
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font(family, "B", 16)
    pdf.cell(
        0,
        10,
        pdf.clean(f"shopfloor {period.kind} report {period.label}"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font(family, "", 10)
    zone = ZoneInfo(period.zone)
    local = [
        datetime.fromtimestamp(t / 1e9, zone).strftime("%Y-%m-%d %H:%M")
        for t in (period.start_ns, period.end_ns)
    ]
    lines = [
        f"Period: {local[0]} to {local[1]} ({period.zone})",
        f"UTC: {format_ns(period.start_ns)} to {format_ns(period.end_ns)}",
        f"Generated: {format_ns(report.generated_ns)}",
        *report.notes,
    ]
    for line in lines:
        pdf.cell(0, 6, pdf.clean(line), new_x="LMARGIN", new_y="NEXT")
    for table in report.tables:
        _table(pdf, family, table)
    return bytes(pdf.output())


def _table(pdf: _Pdf, family: str, table: Table) -> None:
    shown = [i for i, c in enumerate(table.columns) if c.brief]
    pdf.ln(4)
    pdf.set_font(family, "B", 12)
    pdf.cell(0, 8, pdf.clean(table.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 8)
    if not table.rows:
        pdf.cell(0, 6, "No rows in this period.", new_x="LMARGIN", new_y="NEXT")
        return
    align = tuple("LEFT" if table.columns[i].format == "text" else "RIGHT" for i in shown)
    with pdf.table(
        text_align=align,
        headings_style=FontFace(emphasis="BOLD"),
        line_height=5,
        repeat_headings=1,
    ) as grid:
        head = grid.row()
        for i in shown:
            head.cell(pdf.clean(table.columns[i].header))
        for row in table.rows:
            cells = grid.row()
            for i in shown:
                cells.cell(pdf.clean(_text(row[i], table.columns[i])))
