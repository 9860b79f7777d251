"""Shift, day and week reports: gathered through the API's own route functions, rendered
as XLSX and PDF, served by ``GET /api/v1/reports/{kind}`` and sent on a schedule through
the notification channels (see ``docs/reports.md``)."""
