"""Auth API routes for sessions: nodes upload recordings and announce live sessions, users list
and replay recordings and list the live sessions they may join.

Upload is `GET .../recording` (already stored?), one streamed `PUT .../recording/{part}` per
file, then `POST .../recording/complete`; repeating it for a stored session stores nothing.
A proxy acts for a user by naming them in `?user=`; the auth server applies that user's roles.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from teleport.api.auth_models import AnnouncedSession, Stored
from teleport.api.listing_models import ActiveSession, RecordingInfo
from teleport.auth.api import ADMIN, NODE, PROXY, USER, Call, route
from teleport.errors import BadParameter
from teleport.events.recording import check_sid
from teleport.rbac import rules
from teleport.rbac.subject import Subject


def _uploader(call: Call) -> str:
    return call.caller.name


def _viewer(call: Call) -> Subject:
    """Return who the session rules judge: tctl, a user, or the user a proxy names."""
    if call.subject.kind == PROXY:
        raise BadParameter("a proxy must name the user it asks for (?user=)")
    return call.subject


@route("GET", "/v1/sessions/{sid}/recording", [NODE, PROXY])
async def recording_status(call: Call) -> Any:
    return Stored(stored=await call.auth.sessions.recordings.stored(check_sid(call.param("sid"))))


@route("PUT", "/v1/sessions/{sid}/recording/{part}", [NODE, PROXY], raw_body=True)
async def upload_part(call: Call) -> Any:
    await call.auth.sessions.recordings.receive(
        check_sid(call.param("sid")), call.param("part"), _uploader(call),
        call.request.content.iter_any())
    return {}


@route("POST", "/v1/sessions/{sid}/recording/complete", [NODE, PROXY])
async def complete_upload(call: Call) -> Any:
    # A node records only its own sessions; a recording proxy records other nodes' sessions.
    stored = await call.auth.sessions.recordings.commit(
        check_sid(call.param("sid")), _uploader(call), rules.recorded_server(call.caller))
    return Stored(stored=stored)


@route("GET", "/v1/sessions", [ADMIN, PROXY, USER])
async def list_recordings(call: Call) -> Any:
    viewer = _viewer(call)
    return [RecordingInfo(**summary.to_json())
            for summary in await call.auth.sessions.recordings.list()
            if rules.may_list_recording(viewer, summary.user)]


@route("GET", "/v1/sessions/{sid}/stream", [ADMIN, PROXY, USER])
async def stream_recording(call: Call) -> Any:
    sid = check_sid(call.param("sid"))
    await call.auth.sessions.check_play(sid, _viewer(call))
    lines = call.auth.sessions.recordings.replay(sid)
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
    await call.auth.sessions.announce(_uploader(call), sid, body)
    return {}


@route("DELETE", "/v1/active_sessions/{sid}", [NODE])
async def end_session(call: Call) -> Any:
    await call.auth.sessions.end(_uploader(call), check_sid(call.param("sid")))
    return {}


@route("GET", "/v1/active_sessions", [ADMIN, PROXY, USER])
async def list_active_sessions(call: Call) -> Any:
    return [ActiveSession(**s.model_dump())
            for s in await call.auth.sessions.list_active(_viewer(call),
                                                          call.auth.accounts.roles_of)]
