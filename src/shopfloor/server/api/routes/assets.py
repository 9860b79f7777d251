"""The plant's asset tree, its edits and its files.

``GET /api/v1/assets`` answers the tree; ``/api/v1/assets/equipment`` creates (``POST``),
replaces (``PUT``), changes (``PATCH``, a JSON merge patch) and deletes (``DELETE``) one
equipment, validated like the plant file and written back to it (comments kept) before it
is answered; ``GET /api/v1/assets/export`` gives the plant and its templates as files.

Every edit is audited, refused ones too, as the authenticated user (see
:mod:`shopfloor.server.security.actor`), and may name the version it was
based on in ``If-Match`` (the ``ETag`` of every answer here): an edit of an older version
is refused with 412 rather than overwriting a colleague's.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from pydantic import BaseModel, Field

from shopfloor.config.assets import EquipmentEntry
from shopfloor.errors import ConfigError
from shopfloor.server.api.audit_trail import audited, note
from shopfloor.server.api.auth import ENGINEER, READ
from shopfloor.server.api.context import ApiContext, Ctx
from shopfloor.server.api.errors import ApiError
from shopfloor.server.api.schemas import ErrorEnvelope
from shopfloor.server.api.scoping import Caller, require_path
from shopfloor.server.assets import AssetModel
from shopfloor.server.assets.editor import AssetEditError, EditResult, PlantEditor, merge_patch
from shopfloor.server.security import Principal, acting_user
from shopfloor.server.security.scoping import allowed, is_scoped

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["assets"], dependencies=[READ])

_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "stale": 412}
_CODES = {422: "invalid_parameter", 404: "not_found", 409: "conflict", 412: "stale_version"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope} for status in (404, 409, 412, 422)
}
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="The ETag the edit is based on (412 if stale)."),
]


class EditOut(BaseModel):
    """An accepted edit."""

    path: str = Field(description="The equipment's ISA-95 path (before a delete: its last).")
    version: str = Field(description="The plant's new version, also the ETag.")
    equipment: dict[str, Any] | None = Field(
        description="The equipment's row as now written in the plant file (null: deleted)."
    )


class ExportOut(BaseModel):
    """The plant and its templates as files."""

    format: Literal["toml", "yaml"]
    version: str = Field(description="The plant's version the files are of.")
    files: dict[str, str] = Field(
        description="Text by file name: `plant.toml` and `templates/<name>.toml`."
    )


def _model(ctx: ApiContext) -> AssetModel:
    model = ctx.plant.model if ctx.plant is not None else ctx.assets
    if model is None:
        raise ApiError(404, "not_found", None, "no asset model: set [assets] plant")
    return model


def _editor(ctx: ApiContext) -> PlantEditor:
    if ctx.plant is None:
        raise ApiError(404, "not_found", None, "no asset model: set [assets] plant")
    return ctx.plant


def _etag(response: Response, ctx: ApiContext) -> None:
    if ctx.plant is not None:
        response.headers["ETag"] = f'"{ctx.plant.version}"'


@router.get("/assets", summary="The ISA-95 asset tree", responses={404: {"model": ErrorEnvelope}})
async def asset_tree(ctx: Ctx, principal: Caller, response: Response) -> dict[str, Any]:
    """Enterprise, site, areas, lines, cells and equipment, each node with ``name``,
    ``level``, ``path`` and ``children``; equipment also with ``template``, ``metadata``
    (description, location, manufacturer, serial, criticality), ``attributes`` and the
    names of its ``tags``. The ``ETag`` is the plant's version (for ``If-Match``)."""
    tree = _model(ctx).tree()
    _etag(response, ctx)
    return narrow_tree(principal, tree) or {**tree, "children": []}


@router.get(
    "/assets/equipment/{equipment_id}",
    summary="One equipment as written in the plant file",
    response_model=EditOut,
    responses=_ERRORS,
)
async def equipment_row(
    ctx: Ctx, principal: Caller, equipment_id: str, response: Response
) -> EditOut:
    """The row to start a ``PUT`` or ``PATCH`` from, with the plant's version as ETag."""
    editor = _editor(ctx)
    _check_equipment(editor, principal, equipment_id)
    try:
        row = editor.row(equipment_id)
    except AssetEditError as err:
        raise _api_error(err) from err
    _etag(response, ctx)
    return EditOut(path=editor.path_of(equipment_id), version=editor.version, equipment=row)


@router.post(
    "/assets/equipment",
    dependencies=[ENGINEER],
    summary="Add an equipment",
    status_code=201,
    response_model=EditOut,
    responses=_ERRORS,
    openapi_extra=audited("assets.equipment.create"),
)
async def create_equipment(
    ctx: Ctx,
    request: Request,
    principal: Caller,
    *,
    response: Response,
    body: EquipmentEntry,
    if_match: IfMatch = None,
) -> EditOut:
    """A new machine from a template at its place in the tree, with its metadata,
    attributes and bindings (the keys of a plant file's ``[[equipment]]``)."""
    sent = body.model_dump(mode="json", exclude_unset=True)
    editor = _editor(ctx)
    _check_place(ctx, principal, sent)
    done = await _edit(
        request, editor, sent.get("id", ""), sent, lambda: editor.create(sent, if_match=if_match)
    )
    response.headers["Location"] = f"/api/v1/assets/equipment/{body.id}"
    return _answer(response, done)


@router.put(
    "/assets/equipment/{equipment_id}",
    dependencies=[ENGINEER],
    summary="Replace an equipment",
    response_model=EditOut,
    responses=_ERRORS,
    openapi_extra=audited("assets.equipment.replace"),
)
async def replace_equipment(
    ctx: Ctx,
    request: Request,
    principal: Caller,
    *,
    response: Response,
    equipment_id: str,
    body: Annotated[dict[str, Any], Body(description="The keys of POST; `id` renames.")],
    if_match: IfMatch = None,
) -> EditOut:
    """The row is replaced whole: keys left out go back to their defaults. A new ``id``,
    ``area``, ``line`` or ``cell`` moves the machine: its tags and alarms get new paths
    (the history under the old paths stays)."""
    editor = _editor(ctx)
    _check_equipment(editor, principal, equipment_id)
    _check_place(ctx, principal, {"id": equipment_id, **body})
    done = await _edit(
        request,
        editor,
        equipment_id,
        body,
        lambda: editor.replace(equipment_id, body, if_match=if_match),
    )
    return _answer(response, done)


@router.patch(
    "/assets/equipment/{equipment_id}",
    dependencies=[ENGINEER],
    summary="Change some of an equipment's keys",
    response_model=EditOut,
    responses=_ERRORS,
    openapi_extra=audited("assets.equipment.update"),
)
async def patch_equipment(
    ctx: Ctx,
    request: Request,
    principal: Caller,
    *,
    response: Response,
    equipment_id: str,
    body: Annotated[
        dict[str, Any], Body(description="A JSON merge patch (RFC 7396): `null` removes a key.")
    ],
    if_match: IfMatch = None,
) -> EditOut:
    """Only the keys sent change (``{"location": "hall B"}``); objects (``attributes``,
    ``bindings``) merge key by key."""
    editor = _editor(ctx)
    _check_equipment(editor, principal, equipment_id)
    if is_scoped(principal):
        _check_place(ctx, principal, merge_patch(_row(editor, equipment_id), body))
    done = await _edit(
        request,
        editor,
        equipment_id,
        body,
        lambda: editor.patch(equipment_id, body, if_match=if_match),
    )
    return _answer(response, done)


@router.delete(
    "/assets/equipment/{equipment_id}",
    dependencies=[ENGINEER],
    summary="Remove an equipment",
    response_model=EditOut,
    responses=_ERRORS,
    openapi_extra=audited("assets.equipment.delete"),
)
async def delete_equipment(
    ctx: Ctx,
    request: Request,
    principal: Caller,
    *,
    response: Response,
    equipment_id: str,
    if_match: IfMatch = None,
) -> EditOut:
    """Its alarms stop (their journal stays) and its tags get no new points; their history
    stays in the historian."""
    editor = _editor(ctx)
    _check_equipment(editor, principal, equipment_id)
    done = await _edit(
        request, editor, equipment_id, None, lambda: editor.delete(equipment_id, if_match=if_match)
    )
    return _answer(response, done)


@router.get(
    "/assets/export",
    summary="The plant and its templates as files",
    response_model=ExportOut,
    responses={404: {"model": ErrorEnvelope}},
)
async def export_files(
    ctx: Ctx,
    principal: Caller,
    response: Response,
    format: Annotated[Literal["toml", "yaml"], Query(description="File format.")] = "toml",
) -> ExportOut:
    """The files a restart would load, by name: a file already in ``format`` as written
    (comments kept), another converted. ``shopfloor assets check`` passes on them."""
    editor = _editor(ctx)
    _whole_plant(principal)
    files = _exported(editor, format)
    _etag(response, ctx)
    return ExportOut(format=format, version=editor.version, files=files)


@router.get(
    "/assets/export.zip",
    summary="The plant and its templates as a zip archive",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, 404: {"model": ErrorEnvelope}},
)
async def export_zip(
    ctx: Ctx,
    principal: Caller,
    format: Annotated[Literal["toml", "yaml"], Query(description="File format.")] = "toml",
) -> Response:
    """The files of ``/assets/export`` in one archive (``plant.toml``, ``templates/``)."""
    editor = _editor(ctx)
    _whole_plant(principal)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _exported(editor, format).items():
            archive.writestr(name, text)
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={
            "Content-Disposition": 'attachment; filename="plant.zip"',
            "ETag": f'"{editor.version}"',
        },
    )


def _exported(editor: PlantEditor, fmt: Literal["toml", "yaml"]) -> dict[str, str]:
    try:
        return editor.export(fmt)
    except ConfigError as err:
        raise ApiError(409, "conflict", None, str(err)) from err


async def _edit(
    request: Request,
    editor: PlantEditor,
    equipment_id: str,
    sent: dict[str, Any] | None,
    edit: Callable[[], Awaitable[EditResult]],
) -> EditResult:
    """Do ``edit`` (an editor's method) as the acting user, noting it for the audit."""
    target = editor.path_of(equipment_id) or equipment_id
    try:
        if acting_user(request) is None:  # pragma: no cover - the route needs a login
            raise ApiError(401, "unauthorized", None, "edits are audited: log in first")
        try:
            done = await edit()
        except AssetEditError as err:
            raise _api_error(err) from err
    except ApiError:
        note(request, target=target, detail={} if sent is None else {"request": sent})
        raise
    note(
        request,
        target=done.path or target,
        detail={"before": done.before, "after": done.after, "version": done.version},
    )
    return done


def _answer(response: Response, done: EditResult) -> EditOut:
    response.headers["ETag"] = f'"{done.version}"'
    return EditOut(path=done.path, version=done.version, equipment=done.after)


def _api_error(err: AssetEditError) -> ApiError:
    status = _STATUS[err.kind]
    return ApiError(status, _CODES[status], err.field, err.message)


def narrow_tree(principal: Principal | None, node: dict[str, Any]) -> dict[str, Any] | None:
    """The part of an asset tree the principal may see: a node within its sites whole, an
    ancestor of one with only the children that lead there; None for nothing at all."""
    if allowed(principal, node["path"]):
        return node
    children = [c for c in (narrow_tree(principal, c) for c in node["children"]) if c]
    return {**node, "children": children} if children else None


def _row(editor: PlantEditor, equipment_id: str) -> dict[str, Any]:
    try:
        return editor.row(equipment_id)
    except AssetEditError as err:
        raise _api_error(err) from err


def _check_equipment(editor: PlantEditor, principal: Principal | None, equipment_id: str) -> None:
    """403 for an equipment outside the principal's sites (an unknown one: left to 404)."""
    path = editor.path_of(equipment_id)
    if path:
        what = f"the equipment {equipment_id!r} ({path!r})"
        require_path(principal, path, field="equipment_id", what=what)


def _check_place(ctx: ApiContext, principal: Principal | None, row: dict[str, Any]) -> None:
    """403 when an added, moved or renamed equipment would land outside the sites."""
    if not is_scoped(principal):
        return
    model = _model(ctx)
    keys = ("area", "line", "cell", "id")
    if not all(isinstance(row.get(k), str) and row.get(k) for k in keys):
        return  # incomplete: the editor refuses it, naming the field
    path = "/".join([model.enterprise, model.site, *(row[k] for k in keys)])
    require_path(principal, path, field="area", what=f"the place {path!r}")


def _whole_plant(principal: Principal | None) -> None:
    """The plant file holds every area: only a user not limited to sites may export it."""
    if is_scoped(principal):
        assert principal is not None
        raise ApiError(
            403,
            "forbidden",
            None,
            f"{principal.name} is limited to sites ({', '.join(principal.sites)}): the "
            "export holds the whole plant",
        )
