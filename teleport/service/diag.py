"""The diagnostics HTTP endpoints: `/healthz`, `/readyz` and `/metrics` (Prometheus text)."""

from __future__ import annotations

import socket

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from teleport.api.constants import LISTEN_BACKLOG
from teleport.metrics import REGISTRY
from teleport.service.health import Health


def make_app(health: Health) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        # Liveness: the loop answers. Readiness (below) says whether it is of any use.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        problems = health.problems()
        if not problems:
            return web.json_response({"status": "ok"})
        reason = "; ".join(f"{component}: {why}" for component, why in sorted(problems.items()))
        return web.json_response({"status": "degraded", "reason": reason}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(health: Health, host: str, port: int,
                sock: socket.socket | None = None) -> tuple[web.AppRunner, int]:
    """Start the endpoints; the caller owns the runner. Returns it and the bound port."""
    runner = web.AppRunner(make_app(health), access_log=None)
    await runner.setup()
    site: web.BaseSite = (web.SockSite(runner, sock, backlog=LISTEN_BACKLOG) if sock is not None
                          else web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG))
    await site.start()
    return runner, int(runner.addresses[0][1])
