"""The HTTP side of the sandbox's API, apart from what the API does: who may call it, how
bodies are read, how errors are answered.

Only the sandbox's own pages may call `/api/*`. A request whose `Host` is not this server
(127.0.0.1 or localhost, on its port: another name resolving to 127.0.0.1 is DNS
rebinding) or whose `Origin`, when a browser sends one, is not this server is refused
(403), and JSON bodies must say `Content-Type: application/json` (415), which a page of
another site cannot send without asking first (a CORS preflight nobody answers). curl,
`sandbox.client` and the page pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[Any]]
# The page's files, and what each is served as.
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}


class ApiError(Exception):
    """A request the API refuses: its status and a message for whoever sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def own_hosts(port: int) -> set[str]:
    """The `Host` values that name this sandbox (and so the origins its page has)."""
    return {f"127.0.0.1:{port}", f"localhost:{port}"}


def same_origin_only(port: Callable[[], int]) -> Any:
    """Middleware refusing `/api/*` calls from anywhere but the sandbox's own address.

    `port` is read per request: the server learns its port only once it is listening."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            hosts = own_hosts(port())
            if request.headers.get("Host", "") not in hosts:
                return web.json_response({"error": "not this sandbox's address"}, status=403)
            origin = request.headers.get("Origin")
            if origin is not None and origin not in {f"http://{h}" for h in hosts}:
                return web.json_response({"error": "cross-site request refused"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    return guard


def api(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An API handler's result as JSON, and an `ApiError` as `{"error": ...}` with its status."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            return web.json_response(await handler(request))
        except ApiError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)

    return wrapped


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; anything else is a 400, another content type a 415."""
    if request.content_type != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def static_file(name: str) -> bytes:
    """One of the page's files, shipped in the package."""
    return resources.files("sandbox").joinpath("static", name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(body=static_file("index.html"), content_type="text/html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=static_file(name), content_type=STATIC[name])
