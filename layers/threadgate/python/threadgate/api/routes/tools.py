"""/v1/tools (admin): register, list, get, delete webhook tools (API.md §7)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from threadgate.api import render
from threadgate.api.deps import get_admin, get_runtime
from threadgate.api.schemas import Body
from threadgate.domain.errors import InvalidRequest, NotFound
from threadgate.domain.models import Principal, Tool
from threadgate.runtime import Runtime

router = APIRouter()


class ToolCreate(Body):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = Field(min_length=1, max_length=10_000)
    input_schema: dict[str, Any]
    webhook_url: str = Field(min_length=1, max_length=2048)
    timeout_ms: int = Field(default=30_000, ge=1_000, le=120_000)


def _check_schema(schema: dict[str, Any]) -> None:
    from jsonschema import SchemaError, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as err:
        raise InvalidRequest(f"input_schema: not a valid JSON Schema ({err.message})", param="input_schema") from None
    # Anthropic requires `"type": "object"` at the top: without it every turn using the tool fails upstream.
    if schema.get("type") != "object":
        raise InvalidRequest("input_schema: the top-level \"type\" must be \"object\"", param="input_schema")


@router.post("/v1/tools", status_code=201)
async def create_tool(body: ToolCreate, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    from threadgate.webhooks import check_webhook_url

    _check_schema(body.input_schema)
    # Resolves DNS: off the event loop.
    await asyncio.to_thread(check_webhook_url, body.webhook_url, allow_private=rt.settings.private_webhooks_allowed)
    tool = Tool(
        id="tool_" + secrets.token_hex(16),
        account_id=p.account_id,
        name=body.name,
        description=body.description,
        input_schema=body.input_schema,
        webhook_url=body.webhook_url,
        timeout_ms=body.timeout_ms,
        secret="wsk_" + secrets.token_hex(32),
        created_at=rt.clock.now_ms(),
    )
    rt.stores.tools.create_tool(tool)  # 409 on a duplicate live name
    return render.tool(tool, secret=tool.secret)


@router.get("/v1/tools")
def list_tools(p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    return {"object": "list", "data": [render.tool(t) for t in rt.stores.tools.list_tools(p.account_id)]}


@router.get("/v1/tools/{tool_id}")
def get_tool(tool_id: str, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    tool = rt.stores.tools.get_tool(p.account_id, tool_id)
    if tool is None:
        raise NotFound("tool not found")
    return render.tool(tool)


@router.delete("/v1/tools/{tool_id}")
def delete_tool(tool_id: str, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    if not rt.stores.tools.delete_tool(p.account_id, tool_id):
        raise NotFound("tool not found")
    return {"ok": True}


@router.get("/v1/tools/{tool_id}/deliveries")
def list_deliveries(
    tool_id: str,
    limit: int = Query(default=50, ge=1, le=200),
    p: Principal = Depends(get_admin),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    if rt.stores.tools.get_tool(p.account_id, tool_id) is None:
        raise NotFound("tool not found")
    log = rt.stores.deliveries
    records = [] if log is None else log.recent(p.account_id, tool_id, limit)
    return {"object": "list", "data": [render.delivery(r) for r in records]}
