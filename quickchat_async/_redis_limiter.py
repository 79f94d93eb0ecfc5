"""`RedisRateLimiter`: one request rate shared by every process that talks with one token.

Quickchat limits requests per token, so a fleet of workers sharing a token must share the
limit too. The count lives in Redis, kept by the `limits` package's moving window (a Lua
script that records a request only if the last `limit` requests are older than the window,
in one atomic step), on `redis.asyncio`: the `[redis]` extra, imported only when a limiter is
created. `redis.asyncio` is built on asyncio: this limiter does not run under trio.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import sniffio

from ._exceptions import StoreError, ValidationError


if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_RATE_KEY", "RedisRateLimiter"]

#: The Redis key (under the `limits` package's own prefix) a limiter counts under by default.
DEFAULT_RATE_KEY: Final = "quickchat-async:rate"
#: Waiters wake up to this much later than the window frees a place, so that a fleet does not
#: come back in step and race for it.
_JITTER: Final = 0.01
_SOCKET_TIMEOUT: Final = 10.0
_CONNECT_TIMEOUT: Final = 5.0


def _text(value: object, *, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a non-empty string, not {value!r}.")
    return value


def _whole_rate(value: object, *, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValidationError(
            f"{name} must be a whole number of at least 1, or None, not {value!r}."
        )
    return value


class RedisRateLimiter:
    """Keeps the requests of every process that uses it under one rate, counted in Redis.

    Give every worker of a fleet a `RedisRateLimiter` on the same Redis and `key`
    (``AsyncQuickchat(rate_limiter=RedisRateLimiter(url, per_minute=600))``): all of them
    together send at most `per_second` requests in any one-second window and `per_minute` in
    any minute, retries included. A request that finds the window full waits until its oldest
    request leaves it. The windows are measured with the workers' clocks, so keep them in sync
    (NTP); Redis makes each decision atomic.

    Args:
        url: where Redis is, such as ``redis://127.0.0.1:6379/0`` (``rediss://`` for TLS,
            ``unix:///path``). The limiter creates the client and closes it in `aclose()`.
        client: a caller-owned `redis.asyncio.Redis` instead of a URL (the one of a
            `RedisStore`, say); the limiter shares its connection pool and never closes it.
        per_second: at most this many requests a second, a whole number (None: no limit).
        per_minute: at most this many requests a minute, a whole number (None: no limit).
        key: what the count is kept under: one key per token (or per limit you share).

    Raises:
        ValidationError: neither or both of url and client, no rate, a rate that is not a
            whole number of at least 1, or a bad key.
        ImportError: the `limits` or `redis` package is missing
            (``pip install 'quickchat-async[redis]'``).
    """

    __slots__ = (
        "_client",
        "_items",
        "_owns_client",
        "_strategy",
        "key",
        "per_minute",
        "per_second",
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        per_second: int | None = None,
        per_minute: int | None = None,
        key: str = DEFAULT_RATE_KEY,
    ) -> None:
        self.per_second = _whole_rate(per_second, name="per_second")
        self.per_minute = _whole_rate(per_minute, name="per_minute")
        if self.per_second is None and self.per_minute is None:
            raise ValidationError("Give RedisRateLimiter per_second=, per_minute= or both.")
        self.key = _text(key, name="key")
        self._client: Redis = _redis_client(url, client)
        self._owns_client = url is not None
        self._strategy, self._items = _moving_windows(
            self._client, self.per_second, self.per_minute
        )

    def __repr__(self) -> str:
        return (
            f"<RedisRateLimiter key={self.key!r} per_second={self.per_second!r} "
            f"per_minute={self.per_minute!r}>"
        )

    @property
    def client(self) -> Redis:
        """The Redis client the limiter counts through."""
        return self._client

    async def acquire(self) -> None:
        """Wait until one more request fits under every limit, fleet-wide, and count it.

        Raises:
            StoreError: Redis failed, or the event loop is not asyncio.
        """
        library = sniffio.current_async_library()
        if library != "asyncio":
            raise StoreError(
                f"RedisRateLimiter runs on asyncio only (redis.asyncio is built on it), not on "
                f"{library}. Use RateLimiter, or run on asyncio."
            )
        for item in self._items:
            while not await self._call(self._strategy.hit, item, self.key):
                stats = await self._call(self._strategy.get_window_stats, item, self.key)
                wait = max(stats.reset_time - time.time(), 0.0)
                await anyio.sleep(wait + random.uniform(0, _JITTER))  # noqa: S311 -- not crypto

    async def _call(self, method: Any, *args: object) -> Any:  # noqa: ANN401 -- `limits` is untyped here
        from limits.errors import StorageError  # noqa: PLC0415 -- imported with the limiter

        try:
            return await method(*args)
        except StorageError as exc:
            cause = exc.storage_error
            raise StoreError(
                f"The Redis rate limiter failed: {type(cause).__name__}: {cause}"
            ) from exc

    async def aclose(self) -> None:
        """Close the Redis client, if the limiter created it. Safe to call twice.

        Off asyncio there is nothing to close: the client never connected there.
        """
        if self._owns_client and sniffio.current_async_library() == "asyncio":
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _redis_client(url: str | None, client: Redis | None) -> Redis:
    """The client to count with: one made from `url`, or the caller's.

    Raises:
        ImportError: limits or redis is not installed.
        ValidationError: both or neither given, or not a redis.asyncio.Redis.
    """
    try:
        import limits  # noqa: F401, PLC0415 # pyright: ignore[reportUnusedImport] -- needed later
        from redis import asyncio as aioredis  # noqa: PLC0415 -- the optional dependency
    except ImportError as exc:
        msg = (
            "RedisRateLimiter needs the limits and redis packages: "
            "pip install 'quickchat-async[redis]'."
        )
        raise ImportError(msg) from exc
    if (url is None) == (client is None):
        raise ValidationError("Pass RedisRateLimiter a url or a client (a redis.asyncio.Redis).")
    if url is not None:
        return aioredis.Redis.from_url(  # pyright: ignore[reportUnknownMemberType]
            _text(url, name="url"),
            socket_timeout=_SOCKET_TIMEOUT,
            socket_connect_timeout=_CONNECT_TIMEOUT,
        )
    if not isinstance(client, aioredis.Redis):
        raise ValidationError(f"client must be a redis.asyncio.Redis, not {type(client).__name__}.")
    return client


def _moving_windows(
    client: Redis, per_second: int | None, per_minute: int | None
) -> tuple[Any, tuple[Any, ...]]:
    """Limits' moving-window strategy on the client's pool, and the limits it enforces."""
    from limits import RateLimitItemPerMinute, RateLimitItemPerSecond  # noqa: PLC0415
    from limits.aio.storage import RedisStorage  # noqa: PLC0415
    from limits.aio.strategies import MovingWindowRateLimiter  # noqa: PLC0415

    # The storage talks through the client's pool; the URL only names the implementation.
    storage = RedisStorage(
        "async+redis://",
        implementation="redispy",
        wrap_exceptions=True,
        connection_pool=client.connection_pool,  # type: ignore[arg-type]
    )
    items = tuple(
        item
        for item in (
            None if per_second is None else RateLimitItemPerSecond(per_second),
            None if per_minute is None else RateLimitItemPerMinute(per_minute),
        )
        if item is not None
    )
    return MovingWindowRateLimiter(storage), items
