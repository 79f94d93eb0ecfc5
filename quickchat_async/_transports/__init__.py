"""Transports: one module per HTTP engine, each mapping its own errors into the error tree.

```
Transport (protocol: send, aclose)      BaseTransport (async with, user_agent)
 ├── Httpx2Transport   httpx2, the default engine (asyncio and trio)
 ├── HttpxTransport    an httpx 0.28 client a caller passes (asyncio and trio)
 └── AiohttpTransport  aiohttp, for fan-out (asyncio only; extra [aiohttp])
```
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httpx2

from quickchat_async._exceptions import ValidationError

from ._aiohttp import AiohttpTransport
from ._base import BaseTransport, Transport
from ._httpx import HttpxTransport
from ._httpx2 import Httpx2Transport


if TYPE_CHECKING:
    import httpx

__all__ = [
    "AiohttpTransport",
    "BaseTransport",
    "Httpx2Transport",
    "HttpxTransport",
    "Transport",
    "resolve_transport",
]

_ENGINES = "'httpx2' (the default), 'httpx', 'aiohttp'"


def resolve_transport(
    transport: object, http_client: object, max_connections: int
) -> tuple[Transport, Callable[[], Transport] | None]:
    """The transport a client's `transport=` and `http_client=` arguments ask for.

    Returns the transport for the first event loop that sends, and how to make one for each
    other loop: None for a caller's transport or http_client, which the SDK cannot make again.
    A caller's client is never closed by the SDK; a transport built here is owned by the
    client.

    Raises:
        ValidationError: both arguments, an unknown engine, or not a transport or client.
        ImportError: an engine that is not installed (httpx, aiohttp).
        RuntimeError: ``"aiohttp"`` inside a trio event loop.
    """
    if http_client is not None:
        if transport is not None:
            raise ValidationError("Pass http_client= or transport=, not both.")
        return _callers_client(http_client), None
    if isinstance(transport, Transport) and not isinstance(transport, type):
        return transport, None
    make = _maker(transport, max_connections)
    first = make()
    if not isinstance(first, Transport):
        raise ValidationError(
            f"transport= made a {type(first).__name__}, which has no async send(request) and "
            "aclose() methods."
        )
    return first, cast("Callable[[], Transport]", make)


def _callers_client(http_client: object) -> Transport:
    if isinstance(http_client, httpx2.AsyncClient):
        return Httpx2Transport(http_client)
    # Nobody holds an httpx client without having imported httpx.
    httpx_module = sys.modules.get("httpx")
    if httpx_module is not None and isinstance(http_client, httpx_module.AsyncClient):
        return HttpxTransport(cast("httpx.AsyncClient", http_client))
    raise ValidationError(
        "http_client must be an httpx2.AsyncClient or an httpx.AsyncClient, not "
        f"{type(http_client).__name__}."
    )


def _maker(transport: object, max_connections: int) -> Callable[[], object]:
    """What makes a transport for each event loop: an engine's name, or the caller's function."""
    if transport is None or transport == "httpx2":
        return functools.partial(Httpx2Transport, max_connections=max_connections)
    if transport == "httpx":
        return functools.partial(HttpxTransport, max_connections=max_connections)
    if transport == "aiohttp":
        return functools.partial(AiohttpTransport, max_connections=max_connections)
    if isinstance(transport, str):
        raise ValidationError(f"Unknown transport {transport!r}; use {_ENGINES} or a Transport.")
    if callable(transport):
        return cast("Callable[[], object]", transport)
    raise ValidationError(
        "transport must have async send(request) and aclose() methods, or be a function that "
        "makes such a transport."
    )
