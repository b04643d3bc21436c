"""Auth API routes for sessions: nodes upload recordings and announce live sessions, users list
and replay recordings and list the live sessions they may join.

Upload is `GET .../recording` (already stored?), one streamed `PUT .../recording/{part}` per
file, then `POST .../recording/complete`; repeating it for a stored session stores nothing.
A proxy acts for a user by naming them in `?user=`; the auth server applies that user's roles.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from teleport.api.auth_models import AnnouncedSession, RecordingInfo, Stored
from teleport.auth.api import ADMIN, NODE, PROXY, USER, Call, caller_role, route
from teleport.errors import AccessDenied, BadParameter
from teleport.events.recording import check_sid


def _uploader(call: Call) -> str:
    return call.identity.host_uuid or call.identity.username


def _viewer(call: Call) -> tuple[str, tuple[str, ...] | None] | None:
    """Return who is asking and their roles (None: look them up); None when it is tctl."""
    role = caller_role(call.identity)
    if role == ADMIN:
        return None
    if role == PROXY:
        user = call.request.query.get("user", "")
        if not user:
            raise BadParameter("a proxy must name the user it asks for (?user=)")
        return user, None
    return call.identity.username, call.identity.roles


@route("GET", "/v1/sessions/{sid}/recording", [NODE, PROXY])
async def recording_status(call: Call) -> Any:
    return Stored(stored=call.auth.recordings.exists(check_sid(call.param("sid"))))


@route("PUT", "/v1/sessions/{sid}/recording/{part}", [NODE, PROXY], raw_body=True)
async def upload_part(call: Call) -> Any:
    await call.auth.recordings.receive(
        check_sid(call.param("sid")), call.param("part"), _uploader(call),
        call.request.content.iter_any())
    return {}


@route("POST", "/v1/sessions/{sid}/recording/complete", [NODE, PROXY])
async def complete_upload(call: Call) -> Any:
    # A node records only its own sessions; a recording proxy records other nodes' sessions.
    server_id = call.identity.host_uuid if caller_role(call.identity) == NODE else None
    stored = await call.auth.recordings.commit(check_sid(call.param("sid")), _uploader(call),
                                               server_id)
    return Stored(stored=stored)


@route("GET", "/v1/sessions", [ADMIN, PROXY, USER])
async def list_recordings(call: Call) -> Any:
    viewer = _viewer(call)
    visible = []
    for summary in await call.auth.recordings.list():
        if viewer is not None:
            try:
                await call.auth.may_play(summary.sid, *viewer)
            except AccessDenied:
                continue
        visible.append(RecordingInfo.model_validate(summary.to_json()))
    return visible


@route("GET", "/v1/sessions/{sid}/stream", [ADMIN, PROXY, USER])
async def stream_recording(call: Call) -> Any:
    sid = check_sid(call.param("sid"))
    viewer = _viewer(call)
    if viewer is not None:
        await call.auth.may_play(sid, *viewer)
    lines = call.auth.recordings.replay(sid)
    first = await anext(lines, b"")  # a missing recording fails here, as a JSON error
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(call.request)
    await response.write(first)
    async for batch in lines:
        await response.write(batch)
    await response.write_eof()
    return response


# --- live sessions: nodes announce them, users list the ones they may join ------------------

@route("PUT", "/v1/active_sessions/{sid}", [NODE])
async def announce_session(call: Call) -> Any:
    sid = check_sid(call.param("sid"))
    body = await call.body(AnnouncedSession)
    await call.auth.announce_session(_uploader(call), {"sid": sid, **body.model_dump()})
    return {}


@route("DELETE", "/v1/active_sessions/{sid}", [NODE])
async def end_session(call: Call) -> Any:
    await call.auth.end_session(_uploader(call), check_sid(call.param("sid")))
    return {}


@route("GET", "/v1/active_sessions", [ADMIN, PROXY, USER])
async def list_active_sessions(call: Call) -> Any:
    viewer = _viewer(call)
    if viewer is None:
        return await call.auth.list_active_sessions(None, None)
    return await call.auth.list_active_sessions(*viewer)
