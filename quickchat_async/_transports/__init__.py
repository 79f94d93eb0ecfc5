"""Transports: one module per HTTP engine, each mapping its own errors into the error tree.

```
Transport (protocol: send, aclose)      BaseTransport (async with, user_agent)
 ├── Httpx2Transport      httpx2, the default engine (asyncio and trio)
 ├── HttpxTransport       an httpx 0.28 client a caller passes (asyncio and trio)
 └── AiohttpTransport     aiohttp, for fan-out (asyncio only; extra [aiohttp])

SyncTransport (protocol: send, close)   SyncBaseTransport (with, user_agent)
 ├── SyncHttpx2Transport  httpx2, the blocking client's default (threads, gevent)
 ├── SyncHttpxTransport   an httpx 0.28 client a caller passes
 └── GeventTransport      geventhttpclient, for Locust (gevent only; extra [locust])
```
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import attrs

from quickchat_async._exceptions import ValidationError

from ._aiohttp import AiohttpTransport
from ._base import BaseTransport, SyncBaseTransport, SyncTransport, Transport
from ._gevent import GeventTransport
from ._httpx import HttpxTransport, SyncHttpxTransport
from ._httpx2 import Httpx2Transport, SyncHttpx2Transport


__all__ = [
    "AiohttpTransport",
    "BaseTransport",
    "GeventTransport",
    "Httpx2Transport",
    "HttpxTransport",
    "SyncBaseTransport",
    "SyncHttpx2Transport",
    "SyncHttpxTransport",
    "SyncTransport",
    "Transport",
    "resolve_sync_transport",
    "resolve_transport",
]


@attrs.frozen
class _Family:
    """The transports of one kind of client (async or blocking).

    Attributes:
        engines: each `transport=` name and its transport class, the default first.
        client_class: the name of the httpx-family client class this kind of client takes.
        protocol: what a transport instance of this kind must be.
        needs: the methods that makes, for the error message.
    """

    engines: Mapping[str, Callable[..., Any]]
    client_class: str
    protocol: type[Any]
    needs: str


_ASYNC: Final = _Family(
    engines={"httpx2": Httpx2Transport, "httpx": HttpxTransport, "aiohttp": AiohttpTransport},
    client_class="AsyncClient",
    protocol=Transport,
    needs="async send(request) and aclose() methods",
)
_SYNC: Final = _Family(
    engines={"httpx2": SyncHttpx2Transport, "httpx": SyncHttpxTransport, "gevent": GeventTransport},
    client_class="Client",
    protocol=SyncTransport,
    needs="send(request) and close() methods",
)


def resolve_transport(
    transport: object, http_client: object, max_connections: int
) -> tuple[Transport, Callable[[], Transport] | None]:
    """The transport an async client's `transport=` and `http_client=` arguments ask for.

    Returns the transport for the first event loop that sends, and how to make one for each
    other loop: None for a caller's transport or http_client, which the SDK cannot make again.
    A caller's client is never closed by the SDK; a transport built here is owned by the
    client.

    Raises:
        ValidationError: both arguments, an unknown engine, or not a transport or client.
        ImportError: an engine that is not installed (httpx, aiohttp).
        RuntimeError: ``"aiohttp"`` inside a trio event loop.
    """
    first, make = _resolve(_ASYNC, transport, http_client, max_connections)
    return cast("Transport", first), cast("Callable[[], Transport] | None", make)


def resolve_sync_transport(
    transport: object, http_client: object, max_connections: int
) -> SyncTransport:
    """The transport a blocking client's `transport=` and `http_client=` arguments ask for.

    Raises:
        ValidationError: both arguments, an unknown engine, or not a transport or client.
        ImportError: an engine that is not installed (httpx, geventhttpclient).
        RuntimeError: ``"gevent"`` in a program that gevent has not monkey-patched.
    """
    first, _ = _resolve(_SYNC, transport, http_client, max_connections)
    return cast("SyncTransport", first)


def _resolve(
    family: _Family, transport: object, http_client: object, max_connections: int
) -> tuple[object, Callable[[], object] | None]:
    """The choice both kinds of client make: a transport, and how to make another one.

    A caller's client or transport instance cannot be made again (None); an engine's name, or a
    function or class the caller passes, makes one for each event loop an async client runs on.
    """
    engines = family.engines
    if http_client is not None:
        if transport is not None:
            raise ValidationError("Pass http_client= or transport=, not both.")
        # Nobody holds an httpx client without having imported httpx.
        for name in ("httpx2", "httpx"):
            module = sys.modules.get(name)
            if module is not None and isinstance(http_client, getattr(module, family.client_class)):
                return engines[name](http_client), None
        raise ValidationError(
            f"http_client must be an httpx2.{family.client_class} or an "
            f"httpx.{family.client_class}, not {type(http_client).__name__}."
        )
    client = _httpx_client_class(transport)
    if client is not None:  # it has send() and aclose() too, but sends an httpx request
        raise ValidationError(
            f"transport= got an {client}: pass an httpx client as http_client=, which the SDK "
            "sends through (transport= takes a Transport, an engine's name, or a function)."
        )
    if isinstance(transport, family.protocol) and not isinstance(transport, type):
        return transport, None
    make = _maker(family, transport, max_connections)
    first = make()
    if not isinstance(first, family.protocol):
        raise ValidationError(
            f"transport= made a {type(first).__name__}, which has no {family.needs}."
        )
    return first, make


def _httpx_client_class(value: object) -> str | None:
    """The name of the httpx or httpx2 client class `value` is an instance of, if any."""
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)  # nobody holds an httpx client without importing httpx
        for client_class in ("AsyncClient", "Client"):
            if module is not None and isinstance(value, getattr(module, client_class)):
                return f"{name}.{client_class}"
    return None


def _maker(family: _Family, transport: object, max_connections: int) -> Callable[[], object]:
    """What makes a transport: an engine's name (None: the default), or the caller's function."""
    engines = family.engines
    if transport is None:
        transport = next(iter(engines))
    if isinstance(transport, str):
        if transport not in engines:
            names = ", ".join(repr(name) for name in engines).replace(",", " (the default),", 1)
            raise ValidationError(
                f"Unknown transport {transport!r}; use {names} or a {family.protocol.__name__}."
            )
        return functools.partial(engines[transport], max_connections=max_connections)
    if callable(transport):
        return cast("Callable[[], object]", transport)
    raise ValidationError(
        f"transport must have {family.needs}, or be a function that makes such a transport."
    )
