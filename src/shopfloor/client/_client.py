"""A synchronous client of a shopfloor server's REST API.

History comes as Arrow IPC straight from the server (``Accept:
application/vnd.apache.arrow.stream``), so a year of one tag is read without one Python
object per point. Everything goes through the server: a reader never opens the
historian's DuckDB file (which one process owns) nor the PostgreSQL tables.

The server needs an API token (``shopfloor tokens create NAME --role read``): pass it as
``token``, or ``token_file``, or set ``SHOPFLOOR_TOKEN`` / ``SHOPFLOOR_TOKEN_FILE``.
``ca_file``, ``client_cert``, ``headers`` and ``auth`` are for TLS and a reverse proxy.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.client._errors import ApiError, ClientError, ServerUnreachable
from shopfloor.client._tables import Tag, bucket_text, latest_table, tag_from_json, time_text
from shopfloor.wire import ARROW_MEDIA_TYPE

__all__ = ["ShopfloorClient", "TimeArg"]

TimeArg = datetime | str | int
"""An aware datetime, API text (ISO 8601, ``now``, ``-1h``), or UTC nanoseconds."""

_ARROW_ACCEPT = {"accept": ARROW_MEDIA_TYPE}
_MAX_TAGS = 100
"""The most tags the server takes in one history query."""
_MAX_QUERY_TEXT = 6_000
"""About the most characters of paths or times one request carries (URLs stay short)."""


class ShopfloorClient:
    """Read tags, latest values and history from a shopfloor server.

    Example::

        from datetime import UTC, datetime, timedelta
        from shopfloor.client import ShopfloorClient

        with ShopfloorClient("http://shopfloor.plant.local:8000") as client:
            temps = client.history("acme/plant-1/line-1/cnc-1/spindle_temp", "-1d",
                                   bucket="1m", aggregates=["avg", "max"])
            print(temps.num_rows, temps.column_names)  # ts, avg, max

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (or the proxy's https URL).
        timeout: seconds to wait for each answer.
        headers: sent with every request (e.g. a proxy's token header).
        auth: httpx authentication, or ``(user, password)`` for basic auth at a proxy.
        ca_file: PEM file of the CA that signed an https proxy's certificate; default:
            the system's trusted CAs.
        client_cert: ``(certificate, key)`` PEM files, for a proxy that requires one.
        verify: False accepts any certificate (trials only; anyone on the path can read
            and forge the data).
        transport: an httpx transport (tests, or ``httpx.ASGITransport`` in-process).
        token: the API token, sent as ``Authorization: Bearer``; default: the variable
            ``SHOPFLOOR_TOKEN``.
        token_file: a file holding the token (default: the variable
            ``SHOPFLOOR_TOKEN_FILE``), read once here.

    Raises:
        ClientError: the token file cannot be read.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
        verify: bool = True,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        sent = dict(headers or {})
        secret = _token(token, token_file)
        if secret:
            sent["Authorization"] = f"Bearer {secret}"
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers=sent,
            auth=auth,
            verify=_tls(ca_file=ca_file, client_cert=client_cert, verify=verify),
            transport=transport,
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connections. Idempotent."""
        self._http.close()

    def __enter__(self) -> ShopfloorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------------- reads
    def health(self) -> dict[str, Any]:
        """``/healthz``: status, version and the server's counters."""
        answer: dict[str, Any] = self._get("/healthz").json()
        return answer

    def tags(self, prefix: str | None = None) -> list[Tag]:
        """Every tag (or those at or below the asset path ``prefix``), sorted by path."""
        params = {"prefix": prefix} if prefix else None
        return [tag_from_json(t) for t in self._get("/api/v1/tags", params=params).json()["tags"]]

    def latest(self, prefix: str | None = None) -> pa.Table:
        """The last value of every tag (or of those under ``prefix``), sorted by path.

        Columns: path, ts (timestamp ns UTC), value (null for text), quality, text.
        """
        params = {"prefix": prefix} if prefix else None
        return latest_table(self._get("/api/v1/values/latest", params=params).json()["values"])

    def history(
        self,
        path: str,
        start: TimeArg,
        end: TimeArg = "now",
        *,
        bucket: str | timedelta | None = None,
        aggregates: Sequence[str] = ("avg",),
        page_size: int = 100_000,
    ) -> pa.Table:
        """One tag's history over ``[start, end)``, oldest first, in as many pages as needed.

        Without ``bucket``: raw points, columns ts (timestamp ns UTC), value, quality,
        text. With ``bucket`` (``30s``, ``1m``, a timedelta): aggregates of Good points
        per epoch-aligned bucket, columns ts (bucket start) and one per aggregate.

        Raises:
            ApiError: unknown tag (404) or a bad parameter (422, ``field`` names it).
            ServerUnreachable: no answer.
            ClientError: more than ``page_size`` points share one timestamp.
        """
        if page_size < 1:
            raise ValueError("page_size must be 1 or more")
        params: dict[str, str | int] = {"end": time_text(end), "limit": page_size}
        if bucket is not None:
            params["bucket"] = bucket_text(bucket)
            params["agg"] = ",".join(aggregates)
        url = f"/api/v1/tags/{_quote_path(path)}/series"
        pages: list[pa.Table] = []
        page_start = time_text(start)
        while True:
            answer = self._get(url, params={**params, "start": page_start}, headers=_ARROW_ACCEPT)
            page = _read_arrow(answer)
            meta = page.schema.metadata or {}
            truncated = meta.get(b"truncated") == b"true"
            if b"end" in meta:  # "now" as the first page saw it: later pages end there too
                params["end"] = meta[b"end"].decode()
            page = page.replace_schema_metadata(None)
            if not truncated:
                pages.append(page)
                break
            # The last timestamp may continue on the next page: read it again there whole.
            ts = np.asarray(page.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
            keep = int(np.searchsorted(ts, ts[-1], side="left"))
            if keep == 0:
                raise ClientError(
                    f"{path}: more than {page_size} points at {time_text(int(ts[-1]))}; "
                    "raise page_size"
                )
            pages.append(page.slice(0, keep))
            page_start = time_text(int(ts[-1]))
        return pa.concat_tables(pages) if len(pages) > 1 else pages[0]

    def history_many(
        self,
        paths: Sequence[str],
        start: TimeArg,
        end: TimeArg = "now",
        *,
        bucket: str | timedelta | None = None,
        aggregates: Sequence[str] = ("avg",),
        page_size: int = 100_000,
    ) -> pa.Table:
        """:meth:`history` of several tags in one long table with a ``path`` column first.

        Rows come grouped by tag in the order of ``paths``, each tag oldest first.
        """
        tables = [
            self.history(p, start, end, bucket=bucket, aggregates=aggregates, page_size=page_size)
            for p in paths
        ]
        counts = np.array([t.num_rows for t in tables], dtype=np.int64)
        path = pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(paths), dtype=np.int32), counts)),
            pa.array(list(paths), type=pa.string()),
        )
        if not tables:
            return pa.table({"path": path})
        return pa.concat_tables(tables).add_column(0, "path", path)

    def buckets(
        self,
        paths: Sequence[str],
        start: TimeArg,
        end: TimeArg = "now",
        *,
        bucket: str | timedelta,
        aggregates: Sequence[str] = ("avg",),
        tz: str | None = None,
        page_size: int = 100_000,
    ) -> pa.Table:
        """Aggregates of many tags per bucket over ``[start, end)``, every bucket.

        Buckets follow the wall clock of the IANA time zone ``tz`` (UTC if None):
        ``bucket`` is a fixed width (``30s``, ``15m``, ``1h``, a timedelta) or a calendar
        unit (``1d``, ``1w``, ``1mo``, ``3mo``, ``1y``) from local midnight, so with
        ``tz="Europe/Berlin"`` a ``1d`` bucket lasts 23 or 25 hours across a DST change.
        The first bucket is the one holding ``start`` and may begin before it.

        Columns: path (dictionary string), ts (bucket start, timestamp ns UTC), one per
        aggregate (``avg``, ``twa``, ``min``, ``max``, ``first``, ``last``, ``count``,
        ``sum``, ``stddev``, ``delta``; null where the bucket has no value, ``count`` 0)
        and ``bad`` (points of the bucket that are not Good, left out of every
        aggregate). Rows: per path in the order given, oldest bucket first; empty
        buckets included, as :meth:`Historian.read_buckets` gives them.

        Raises:
            ValueError: a path contains a comma (the server splits ``tags`` on commas).
            ApiError: unknown tag (404) or a bad parameter (422, ``field`` names it:
                ``interval``, ``tz``, ``agg``, ``to`` for a range with too many points).
            ServerUnreachable: no answer.
        """
        if page_size < 2:
            raise ValueError("page_size must be 2 or more")
        names = _unique_paths(paths)
        params: dict[str, str | int] = {
            "interval": bucket_text(bucket),
            "agg": ",".join(aggregates),
            "fill": "null",
            "limit": page_size,
        }
        if tz:
            params["tz"] = tz
        tables = [
            self._bucket_pages(chunk, time_text(start), time_text(end), params)
            for chunk in _path_chunks(names)
        ]
        return _by_path(names, tables)

    def values_at(
        self,
        paths: Sequence[str],
        times: Sequence[TimeArg],
        *,
        method: str = "previous",
    ) -> pa.Table:
        """The value of every tag at every time, from its Good points.

        ``method="previous"`` gives the last Good value at or before each time (what a
        PLC holds: a counter at a shift change), ``"linear"`` the straight line between
        the Good points around it. Null before a tag's first Good point, and for
        ``linear`` after its last one.

        Columns: path (dictionary string), ts (the time asked, timestamp ns UTC), value
        (float64). Rows: per path in the order given, by time.

        Raises:
            ValueError: a path contains a comma (the server splits ``tags`` on commas).
            ApiError: unknown tag (404) or a bad parameter (422, ``field`` names it).
            ServerUnreachable: no answer.
        """
        names = _unique_paths(paths)
        texts = [time_text(t) for t in times]
        tables: list[pa.Table] = []
        for chunk in _path_chunks(names):
            parts = []
            for some in _text_chunks(texts):
                params = {"tags": ",".join(chunk), "at": ",".join(some), "method": method}
                parts.append(
                    _read_arrow(
                        self._get("/api/v1/values/at", params=params, headers=_ARROW_ACCEPT)
                    )
                )
            tables.append(pa.concat_tables(p.replace_schema_metadata(None) for p in parts))
        return _by_path(names, tables)

    def _bucket_pages(
        self, paths: Sequence[str], start: str, end: str, params: Mapping[str, str | int]
    ) -> pa.Table:
        """Every bucket of a few tags, asked for in pages of whole buckets."""
        query = {**params, "tags": ",".join(paths)}
        pages: list[pa.Table] = []
        page_start = start
        while True:
            asked = {**query, "from": page_start, "to": end}
            page = _read_arrow(self._get("/api/v1/history", params=asked, headers=_ARROW_ACCEPT))
            meta = page.schema.metadata or {}
            if b"end" in meta:  # "now" as the first page saw it: later pages end there too
                end = meta[b"end"].decode()
            page = page.replace_schema_metadata(None)
            if meta.get(b"truncated") != b"true":
                pages.append(page)
                return pa.concat_tables(pages) if len(pages) > 1 else page
            # Every tag has every bucket, so each page ends at the same bucket: its start is
            # an edge, and the next page, from there, begins with that bucket whole.
            ts = np.asarray(page.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
            last = int(ts.max())
            if int(ts.min()) == last:
                raise ClientError("the server gave one bucket per page: raise page_size")
            pages.append(page.filter(pa.array(ts < last)))
            page_start = time_text(last)

    # -------------------------------------------------------------------- plumbing
    def _get(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.get(url, params=params, headers=headers)
        except httpx.TransportError as err:
            raise ServerUnreachable(f"no answer from {self.base_url}: {err}") from err
        if response.is_success:
            return response
        raise _api_error(response)


def _token(token: str | None, token_file: Path | None) -> str | None:
    """The API token: given, from its file, or from the environment."""
    if token:
        return token.strip()
    path = token_file or (
        Path(os.environ["SHOPFLOOR_TOKEN_FILE"]) if os.environ.get("SHOPFLOOR_TOKEN_FILE") else None
    )
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as err:
            raise ClientError(f"token_file: cannot read {path}: {err.strerror}") from err
    return os.environ.get("SHOPFLOOR_TOKEN", "").strip() or None


def _tls(
    *, ca_file: Path | None, client_cert: tuple[Path, Path] | None, verify: bool
) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` takes: an SSL context when any TLS option is set."""
    if ca_file is None and client_cert is None:
        return verify
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if client_cert is not None:
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    except (OSError, ssl.SSLError) as err:
        raise ClientError(f"cannot load the TLS files: {err}") from err
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _api_error(response: httpx.Response) -> ApiError:
    """The server's error envelope as an exception (or the start of a foreign body)."""
    try:
        error = response.json()["error"]
        return ApiError(
            response.status_code, str(error["code"]), error.get("field"), str(error["message"])
        )
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", None, response.text[:200])


def _read_arrow(response: httpx.Response) -> pa.Table:
    if ARROW_MEDIA_TYPE not in response.headers.get("content-type", ""):
        raise ClientError(f"expected an Arrow stream, got {response.headers.get('content-type')!r}")
    try:
        with pa.ipc.open_stream(response.content) as reader:
            return reader.read_all()
    except pa.ArrowInvalid as err:
        raise ClientError(f"the server's Arrow stream is damaged: {err}") from err


def _unique_paths(paths: Sequence[str]) -> list[str]:
    """``paths`` without repeats, checked for what the server's ``tags`` cannot carry."""
    if isinstance(paths, str):
        raise ValueError("paths must be a list of tag paths, not one string")
    names = list(dict.fromkeys(paths))
    if not names:
        raise ValueError("paths must name at least one tag")
    for path in names:
        if "," in path:
            raise ValueError(f"{path!r}: the server reads tags as a comma-separated list")
    return names


def _text_chunks(texts: Sequence[str], *, most: int = 10_000) -> list[list[str]]:
    """``texts`` in runs of at most ``most`` items and about :data:`_MAX_QUERY_TEXT`
    characters each (one empty run for none: the server says what is missing)."""
    chunks: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if chunks[-1] and (len(chunks[-1]) >= most or size + len(text) > _MAX_QUERY_TEXT):
            chunks.append([])
            size = 0
        chunks[-1].append(text)
        size += len(text) + 1
    return chunks


def _path_chunks(paths: Sequence[str]) -> list[list[str]]:
    """Tag paths in runs the server takes in one query."""
    return _text_chunks(paths, most=_MAX_TAGS)


def _by_path(paths: Sequence[str], tables: Sequence[pa.Table]) -> pa.Table:
    """Join answers about runs of ``paths`` into one table, per path in order, by time.

    Each table has a dictionary ``path`` column of its own run; the result's dictionary
    is ``paths``. Rows of one path keep their order among equal times.
    """
    index = {path: i for i, path in enumerate(paths)}
    tags: list[npt.NDArray[np.int32]] = []
    for table in tables:
        column = table.column("path").combine_chunks()
        lookup = np.array([index[p] for p in column.dictionary.to_pylist()], dtype=np.int32)
        tags.append(lookup[column.indices.to_numpy(zero_copy_only=False)])
    joined = pa.concat_tables([t.drop_columns(["path"]) for t in tables])
    tag = np.concatenate(tags) if tags else np.zeros(0, np.int32)
    ts = np.asarray(joined.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
    order = np.lexsort((ts, tag))
    path = pa.DictionaryArray.from_arrays(
        pa.array(tag[order], pa.int32()), pa.array(list(paths), pa.string())
    )
    return joined.take(pa.array(order, pa.int64())).add_column(0, "path", path)


def _quote_path(path: str) -> str:
    """Percent-encode each segment of a tag path (it may hold spaces, ``%`` or ``?``)."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))
