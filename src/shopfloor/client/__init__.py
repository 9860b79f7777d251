"""A small Python client of a shopfloor server's REST API.

History and latest values come as Arrow tables (``to_pandas``/``to_polars`` convert them
when those libraries are installed; shopfloor does not install them), tags as
:class:`Tag` values. The client reads through the server only, never the historian's
files, so it is safe to use while the server runs::

    from shopfloor.client import ShopfloorClient

    with ShopfloorClient("http://127.0.0.1:8000") as client:
        table = client.history("acme/plant-1/line-1/cnc-1/spindle_temp", "-1h")
        # parts per plant day, and the counter at each shift change
        days = client.buckets(["acme/plant-1/line-1/press/strokes"], "-7d", bucket="1d",
                              aggregates=["delta"], tz="Europe/Berlin")
        shifts = client.values_at(["acme/plant-1/line-1/press/strokes"],
                                  ["2026-03-02T06:00:00+01:00", "2026-03-02T14:00:00+01:00"])
"""

from shopfloor.client._client import ShopfloorClient, TimeArg
from shopfloor.client._errors import ApiError, ClientError, ServerUnreachable
from shopfloor.client._tables import LATEST_SCHEMA, Tag, to_pandas, to_polars

__all__ = [
    "LATEST_SCHEMA",
    "ApiError",
    "ClientError",
    "ServerUnreachable",
    "ShopfloorClient",
    "Tag",
    "TimeArg",
    "to_pandas",
    "to_polars",
]
