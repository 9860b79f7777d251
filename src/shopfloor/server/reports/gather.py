"""Gather one report's data: OEE, downtime Pareto, alarm KPIs, energy and SPC of a period.

Every figure comes from the very function that answers the matching HTTP route (``GET
/api/v1/oee``, ``/downtime/pareto``, ``/alarms/kpis``, ``/energy``, ``/spc/{chart}``),
called with the period's ISO start and end: a report can never disagree with the screens
because there is no second computation path. The answers are kept raw in
:attr:`Report.answers` and laid out as :class:`Table` rows for the renderers.

A section whose service this server lacks (no machines with states, no energy tags, no
configured charts) is left out with a note saying why, rather than failing the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shopfloor.config.spc import SpcChartConfig
from shopfloor.errors import PayloadError, UnknownTagError
from shopfloor.model.timefmt import format_ns
from shopfloor.server.analytics.spc_service import compute_chart, spec_from_config
from shopfloor.server.api.context import ApiContext
from shopfloor.server.api.routes.alarms import kpis
from shopfloor.server.api.routes.analytics import get_oee, get_pareto
from shopfloor.server.api.routes.energy import get_energy
from shopfloor.server.reports.period import Period

__all__ = ["Cell", "Column", "Report", "Table", "gather"]

Cell = str | float | int | None
Format = Literal["text", "number", "integer", "percent"]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, the unit shown beside it, how numbers are shown, and
    whether the PDF (narrower than a spreadsheet) shows it."""

    name: str
    unit: str = ""
    format: Format = "number"
    brief: bool = True

    @property
    def header(self) -> str:
        """``Downtime [min]``."""
        return f"{self.name} [{self.unit}]" if self.unit else self.name


@dataclass(frozen=True, slots=True)
class Table:
    """One section's table: a sheet in the XLSX, a table in the PDF."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[Cell, ...]]


@dataclass(slots=True)
class Report:
    """A gathered report: the period, its tables, notes on omitted sections, and the raw
    API answers the tables were made from."""

    period: Period
    generated_ns: int
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for channels that cannot carry files: plant OEE and the top loss."""
        lines = [f"shopfloor {self.period.kind} report {self.period.label}"]
        plant = self.answers.get("oee", {}).get("plant")
        if plant is not None and plant["rows"]:
            row = plant["rows"][0]
            oee = row.get("oee")
            lines.append(
                "OEE "
                + ("n/a" if oee is None else f"{oee:.1%}")
                + f" · good {row['good']:.0f} · stops {row['stops']}"
            )
        pareto = self.answers.get("pareto_reason")
        if pareto is not None and pareto["rows"] and pareto["rows"][0]["downtime_s"] > 0:
            top = pareto["rows"][0]
            name = top["label"] or f"reason {top['key']}"
            lines.append(f"Top loss: {name} {top['downtime_s'] / 60:.0f} min")
        energy = self.answers.get("energy", {}).get("plant")
        if energy is not None and energy["rows"]:
            lines.append(f"Energy {energy['rows'][0]['kwh']:.1f} kWh")
        lines.extend(self.notes)
        return "\n".join(lines)


_MIN = 60.0
_LOSSES = (
    ("Breakdowns", "breakdowns_s"),
    ("Setup", "setup_adjustments_s"),
    ("Small stops", "small_stops_s"),
    ("Reduced speed", "reduced_speed_s"),
    ("Rejects", "rejects_s"),
)
_OEE_COLUMNS = (
    Column("Level", format="text"),
    Column("Name", format="text"),
    Column("Availability", "%", "percent"),
    Column("Performance", "%", "percent"),
    Column("Quality", "%", "percent"),
    Column("OEE", "%", "percent"),
    Column("Planned", "min", brief=False),
    Column("Run", "min", brief=False),
    Column("Parts", "pcs", "integer"),
    Column("Good", "pcs", "integer"),
    Column("Scrap", "pcs", "integer", brief=False),
    Column("Stops", "", "integer"),
    Column("Micro-stops", "", "integer", brief=False),
    *(Column(name, "min", brief=name in {"Breakdowns", "Setup"}) for name, _ in _LOSSES),
)
_PARETO_COLUMNS = (
    Column("Key", format="text"),
    Column("Label", format="text"),
    Column("Stops", "", "integer"),
    Column("Downtime", "min"),
    Column("Share", "%", "percent"),
    Column("Cumulative", "%", "percent"),
    Column("Micro-stops", "", "integer"),
    Column("Micro-stop time", "min"),
)


async def gather(
    ctx: ApiContext,
    period: Period,
    *,
    charts: Sequence[SpcChartConfig] = (),
) -> Report:
    """The report of ``period`` from the server parts in ``ctx``.

    Args:
        ctx: the API's context (the same services the routes use).
        period: what to report on.
        charts: the configured control charts (``[[analytics.spc]]``).
    """
    report = Report(period, ctx.clock())
    start, end = format_ns(period.start_ns), format_ns(period.end_ns)
    if ctx.analytics is None:
        report.notes.append("OEE and downtime: left out, no machine has a state tag.")
    else:
        await _oee(ctx, report, start, end)
        await _pareto(ctx, report, start, end)
    if ctx.alarms is None:
        report.notes.append("Alarms: left out, this server runs no alarm engine.")
    else:
        await _alarms(ctx, report, start, end)
    if ctx.energy is None:
        report.notes.append("Energy: left out, no equipment has energy or power tags.")
    else:
        await _energy(ctx, report, start, end)
    if not charts:
        report.notes.append("SPC: left out, no control charts are configured.")
    else:
        await _spc(ctx, report, charts)
    return report


def _n(value: Any, scale: float = 1.0) -> float | None:
    return None if value is None else float(value) / scale


async def _oee(ctx: ApiContext, report: Report, start: str, end: str) -> None:
    assert ctx.analytics is not None
    try:
        machines = ctx.analytics.select(equipment=None, line=None, oee_only=True)
    except PayloadError:
        report.notes.append("OEE: left out, no machine has parts and an ideal cycle time.")
        return
    answers: dict[str, Any] = {}
    rows: list[tuple[Cell, ...]] = []

    async def one(level: str, name: str, **which: str) -> None:
        answer = await get_oee(ctx, principal=None, start=start, end=end, group="none", **which)
        answers[f"{level}:{name}" if level != "plant" else "plant"] = answer
        for r in answer["rows"]:
            losses = r["losses"]
            rows.append(
                (
                    level,
                    name,
                    _n(r["availability"]),
                    _n(r["performance"]),
                    _n(r["quality"]),
                    _n(r["oee"]),
                    r["planned_s"] / _MIN,
                    r["run_s"] / _MIN,
                    r["total"],
                    r["good"],
                    r["scrap"],
                    r["stops"],
                    r["micro_stops"],
                    *(losses[key] / _MIN for _, key in _LOSSES),
                )
            )

    await one("plant", "plant")
    for line in sorted({m.line for m in machines}):
        await one("line", line, line=line)
    for m in machines:
        await one("machine", m.id, equipment=m.id)
    report.answers["oee"] = answers
    report.tables.append(Table("OEE", "OEE per machine and line", _OEE_COLUMNS, rows))


async def _pareto(ctx: ApiContext, report: Report, start: str, end: str) -> None:
    for by, title in (("reason", "Downtime by reason"), ("equipment", "Downtime by machine")):
        answer = await get_pareto(ctx, principal=None, by=by, start=start, end=end)  # type: ignore[arg-type]
        report.answers[f"pareto_{by}"] = answer
        rows: list[tuple[Cell, ...]] = [
            (
                r["key"],
                r["label"],
                r["stops"],
                r["downtime_s"] / _MIN,
                r["share"],
                r["cumulative_share"],
                r["micro_stops"],
                r["micro_stop_s"] / _MIN,
            )
            for r in answer["rows"]
        ]
        key = "Pareto reason" if by == "reason" else "Pareto machine"
        report.tables.append(Table(key, title, _PARETO_COLUMNS, rows))


async def _alarms(ctx: ApiContext, report: Report, start: str, end: str) -> None:
    answer = (await kpis(ctx, principal=None, start=start, end=end)).model_dump()
    report.answers["alarms"] = answer
    figures: list[tuple[Cell, ...]] = [
        ("Activations", answer["activations"], ""),
        ("Average per 10 min", answer["average_per_10min"], "1/10 min"),
        ("Peak per 10 min", answer["peak_per_10min"], "1/10 min"),
        ("Share of 10 min over 2", answer["share_over_manageable"], "%"),
        ("Floods (over 10 in 10 min)", len(answer["floods"]), ""),
        ("Share of time in flood", answer["share_in_flood"], "%"),
    ]
    report.tables.append(
        Table(
            "Alarms",
            "Alarm KPIs (ISA-18.2)",
            (Column("Figure", format="text"), Column("Value"), Column("Unit", format="text")),
            figures,
        )
    )
    report.tables.append(
        Table(
            "Bad actors",
            "Top-10 alarms",
            (
                Column("Alarm", format="text"),
                Column("Activations", "", "integer"),
                Column("Share", "%", "percent"),
            ),
            [(b["alarm"], b["count"], b["share"]) for b in answer["bad_actors"]],
        )
    )


async def _energy(ctx: ApiContext, report: Report, start: str, end: str) -> None:
    assert ctx.energy is not None
    answers: dict[str, Any] = {}
    rows: list[tuple[Cell, ...]] = []

    async def one(level: str, name: str, **which: str) -> None:
        answer = await get_energy(ctx, principal=None, start=start, end=end, group="none", **which)
        answers[f"{level}:{name}" if level != "plant" else "plant"] = answer
        for r in answer["rows"]:
            kwh, idle = r["kwh"], r["idle_kwh"]
            rows.append(
                (
                    level,
                    name,
                    kwh,
                    r["producing_kwh"],
                    idle,
                    r["planned_stop_kwh"],
                    r["good_parts"],
                    r["kwh_per_good_part"],
                    idle / kwh if idle is not None and kwh else None,
                )
            )

    await one("plant", "plant")
    for meter in ctx.energy.meters:
        await one("equipment", meter.id, equipment=meter.id)
    report.answers["energy"] = answers
    columns = (
        Column("Level", format="text"),
        Column("Name", format="text"),
        Column("Energy", "kWh"),
        Column("Producing", "kWh"),
        Column("Idle", "kWh"),
        Column("Planned stops", "kWh"),
        Column("Good parts", "pcs", "integer"),
        Column("Per good part", "kWh/pc"),
        Column("Idle share", "%", "percent"),
    )
    report.tables.append(Table("Energy", "Energy", columns, rows))


async def _spc(ctx: ApiContext, report: Report, charts: Sequence[SpcChartConfig]) -> None:
    answers: dict[str, Any] = {}
    rows: list[tuple[Cell, ...]] = []
    for chart in charts:
        try:
            answer = await compute_chart(
                ctx.historian, spec_from_config(chart), report.period.start_ns, report.period.end_ns
            )
        except (PayloadError, UnknownTagError) as err:
            answers[chart.name] = None
            rows.append((chart.name, chart.tag, None, None, None, None, None, None, str(err)))
            continue
        answers[chart.name] = answer
        limits = (answer["limits"] or {}).get("x", {})
        cap = answer["capability"] or {}
        rows.append(
            (
                chart.name,
                chart.tag,
                len(answer["points"]["x"]),
                limits.get("lcl"),
                limits.get("center"),
                limits.get("ucl"),
                len(answer["violations"]),
                cap.get("cpk"),
                "",
            )
        )
    report.answers["spc"] = answers
    columns = (
        Column("Chart", format="text"),
        Column("Tag", format="text", brief=False),
        Column("Subgroups", "", "integer"),
        Column("LCL"),
        Column("Centre"),
        Column("UCL"),
        Column("Violations", "", "integer"),
        Column("Cpk"),
        Column("Note", format="text"),
    )
    report.tables.append(Table("SPC", "Control charts", columns, rows))
