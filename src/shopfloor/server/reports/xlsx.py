"""The XLSX rendering of a report: pure, from a gathered :class:`Report` to bytes.

One sheet per table, after a cover sheet with the period and the notes. Numbers are
written as numbers (ratios as fractions shown as percentages), units are in the headers,
header rows are frozen and columns sized to their content, so the file sorts, filters and
charts in Excel or LibreOffice without cleaning. xlsxwriter writes only, in memory, and
needs nothing else; run this in a thread (it is CPU work).
"""

from __future__ import annotations

import io

import xlsxwriter

from shopfloor.model.timefmt import format_ns
from shopfloor.server.reports.gather import Report, Table

__all__ = ["CONTENT_TYPE", "render_xlsx"]

CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

_FORMATS = {"number": "0.00", "integer": "0", "percent": "0.0%", "text": "@"}


def render_xlsx(report: Report) -> bytes:
    """The report as an XLSX workbook."""
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True, "remove_timezone": True})
    bold = book.add_format({"bold": True})
    header = book.add_format({"bold": True, "bottom": 1, "text_wrap": True, "valign": "top"})
    formats = {name: book.add_format({"num_format": f}) for name, f in _FORMATS.items()}
    period = report.period
    cover = book.add_worksheet("Report")
    cover.set_column(0, 0, 18)
    cover.set_column(1, 1, 60)
    facts = [
        ("Report", f"{period.kind} {period.label}"),
        ("From", format_ns(period.start_ns)),
        ("Until", format_ns(period.end_ns)),
        ("Time zone", period.zone),
        ("Generated", format_ns(report.generated_ns)),
    ]
    for row, (name, value) in enumerate(facts):
        cover.write_string(row, 0, name, bold)
        cover.write_string(row, 1, value)
    for i, note in enumerate(report.notes):
        cover.write_string(len(facts) + 1 + i, 1, note)
    for table in report.tables:
        _sheet(book, table, header, formats)
    book.close()
    return out.getvalue()


def _sheet(
    book: xlsxwriter.Workbook,
    table: Table,
    header: xlsxwriter.format.Format,
    formats: dict[str, xlsxwriter.format.Format],
) -> None:
    sheet = book.add_worksheet(table.key[:31])
    widths = [len(c.header) for c in table.columns]
    for col, column in enumerate(table.columns):
        sheet.write_string(0, col, column.header, header)
    for r, row in enumerate(table.rows, start=1):
        for col, (column, value) in enumerate(zip(table.columns, row, strict=True)):
            if value is None:
                sheet.write_blank(r, col, None)
            elif isinstance(value, str):
                sheet.write_string(r, col, value)
                widths[col] = max(widths[col], len(value))
            else:
                sheet.write_number(r, col, float(value), formats[column.format])
                widths[col] = max(widths[col], 10)
    for col, width in enumerate(widths):
        sheet.set_column(col, col, min(max(width + 2, 8), 60))
    sheet.freeze_panes(1, 0)
    if table.rows:
        sheet.autofilter(0, 0, len(table.rows), len(table.columns) - 1)
