"""What stands before every route: the bearer token, the body size limit, the bind check.

The middleware is plain ASGI, so it guards every path, unknown ones included, before any
routing or body parsing happens. The page (`/` and its two static files) is public: it holds
no data and asks the user for the token, which it then sends with every API call.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/", "/static/app.js", "/static/style.css"})
"""The page and its files: the only routes open without the token."""

SECURITY_HEADERS = [
    # Nothing is loaded from elsewhere (no CDN); no framing, no MIME sniffing.
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; connect-src 'self' blob:",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def token_matches(given: str | None, token: str) -> bool:
    """Compare a presented token with the server's in constant time (`hmac.compare_digest`)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """True for a loopback address or a name that resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without a token, unless `insecure`.

    Raises:
        ValueError: naming the host and the two ways out.
    """
    if token is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"--host {host} is reachable from other machines: give --token (or set "
            "DIFFUSE_SERVE_TOKEN), or pass --insecure to serve it without authentication"
        )


async def _send_json(send: Send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Bearer-token check (401) and request body limit (413) in front of an ASGI app; adds
    the security headers to every response.

    Args:
        app: the application.
        token: the token every non-public path needs, or None.
        max_body_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int) -> None:
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is not None and scope["path"] not in PUBLIC_PATHS:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not token_matches(given.strip() or None, self.token):
                await _send_json(
                    send,
                    401,
                    "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                    [(b"www-authenticate", b'Bearer realm="diffuse"')],
                )
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _send_json(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        body, more = b"", True
        if scope["method"] in ("POST", "PUT", "PATCH"):
            while more:  # read the whole (bounded) body first; chunked bodies are counted too
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body_bytes:
                    await _send_json(send, 413, f"request body over {self.max_body_bytes} bytes")
                    return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if scope["method"] in ("POST", "PUT", "PATCH") and not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, replay, send_with_headers)
