"""Auth API routes for audit events (search)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from teleport.api.auth_models import EventPage
from teleport.auth.api import ADMIN, USER, Call, route
from teleport.errors import BadParameter, NotSupported
from teleport.events.search import DEFAULT_LIMIT, EventQuery, SearchableLog
from teleport.utils.clock import parse_time


@route("GET", "/v1/events", [ADMIN, USER], rule=("event", "list"))
async def search_events(call: Call) -> Any:
    """Answer one page of events, oldest (or newest) first; `next_key` resumes after it."""
    query = _query(call.request)
    audit = call.auth.emitter
    if not isinstance(audit, SearchableLog):
        raise NotSupported("this auth server's audit log cannot be searched")
    page = await audit.search(query)
    return EventPage(events=page.events, next_key=page.next_key)


def _query(request: web.Request) -> EventQuery:
    """Read `from`, `to` (RFC 3339), `type` (comma-separated), `user`, `q` (free text),
    `order` (`asc`, the default, or `desc`), `limit`, `start_key`."""
    params = request.query
    limit = params.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit():
        raise BadParameter(f"limit must be a positive number, not {limit!r}")
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadParameter(f"order must be asc or desc, not {order!r}")
    return EventQuery(
        since=parse_time(params.get("from", ""), "from"), until=parse_time(params.get("to", ""), "to"),
        types=frozenset(t for t in params.get("type", "").split(",") if t),
        user=params.get("user", ""), limit=int(limit), start_key=params.get("start_key", ""),
        text=params.get("q", ""), newest_first=order == "desc")

