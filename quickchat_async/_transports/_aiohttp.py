"""`AiohttpTransport`: the fan-out transport, written directly on `aiohttp.ClientSession`.

httpx's connection pool spends more CPU per request the more connections it holds; with tens of
requests in flight, aiohttp sends several times as many per second on one core. This transport
keeps the SDK's contract (the same `Timeout`, no redirects, a bounded body, the same errors and
the same "was it sent?" rule) and runs on asyncio only: aiohttp is an asyncio library.

Install it with ``pip install "quickchat-async[aiohttp]"`` and pick it with
``AsyncQuickchat(..., transport="aiohttp")``.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

import sniffio

from quickchat_async._config import Timeout
from quickchat_async._exceptions import ClientClosedError, QuickchatError
from quickchat_async._models import HTTPResponse
from quickchat_async._version import __version__
from quickchat_async._wire import ChatRequest, ErrorTable, classify, deadline_error

from ._base import BaseTransport, CappedBody, scrubbed
from ._decoding import UndecodableError


if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport"]

_INSTALL: Final = (
    "The aiohttp transport needs aiohttp: pip install 'quickchat-async[aiohttp]' "
    "(or leave out transport= for the default engine, httpx2)."
)
_ASYNCIO_ONLY: Final = (
    "The aiohttp transport runs on asyncio only, not on {library}: leave out transport= for "
    "the default engine, httpx2, which runs on asyncio and trio."
)


def _require_aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401, PLC0415 # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc


def _require_asyncio(*, running: bool) -> None:
    """Refuse other event loops; outside any loop, only `running=True` callers must be in one."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        if running:
            raise RuntimeError(_ASYNCIO_ONLY.format(library="no event loop")) from None
        return
    if library != "asyncio":
        raise RuntimeError(_ASYNCIO_ONLY.format(library=library))


#: Requests being sent, by task: whether any byte may have gone out (False while connecting).
#: One dict per owned session; a task sends one request at a time.
_Progress: TypeAlias = "dict[asyncio.Task[Any] | None, bool]"


@functools.cache
def _connector_class() -> Callable[[_Progress, int], aiohttp.TCPConnector]:
    """A TCPConnector that records in its `progress` when a request's task is connecting."""
    import aiohttp  # noqa: PLC0415 -- an optional extra

    class _TrackingConnector(aiohttp.TCPConnector):
        def __init__(self, progress: _Progress, limit: int) -> None:
            # aiohttp types one parameter (socket_factory) with a bare tuple.
            super().__init__(limit=limit, limit_per_host=0)  # pyright: ignore[reportUnknownMemberType]
            self.progress = progress

        async def connect(
            self,
            req: aiohttp.ClientRequest,
            traces: list[aiohttp.tracing.Trace],
            timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 -- aiohttp's own signature
        ) -> aiohttp.connector.Connection:
            progress = self.progress
            task = asyncio.current_task()
            if task not in progress:  # not a request of `send` (the session used directly)
                return await super().connect(req, traces, timeout)
            progress[task] = False
            connection = await super().connect(req, traces, timeout)
            progress[task] = True
            return connection

    return _TrackingConnector


class _Deadlines:
    """The deadlines of one transport's requests in flight, kept by a single timer.

    aiohttp keeps a request's deadline (`ClientTimeout(total=...)`) with an asyncio timer of its
    own, scheduled and cancelled for every request: 40k instructions a request, 9% of what raw
    aiohttp spends on one (callgrind, 64 in flight against nginx; `asyncio.timeout()` costs as
    much). Here one timer, set for the earliest deadline, serves every request in flight: it
    cancels the requests whose deadline has come, and `stop()` tells `send` which cancellations
    were its own, to raise TimeoutError instead, by `asyncio.timeout`'s rule (the timeout's,
    unless someone else also cancelled the task).
    """

    __slots__ = ("_due", "_expired", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, task: asyncio.Task[Any], seconds: float) -> None:
        """Cancel `task` in `seconds` unless `stop()` comes first."""
        loop = task.get_loop()
        due = loop.time() + seconds
        self._due[task] = due
        if due < self._timer_at:
            self._arm(loop, due)

    def stop(self, task: asyncio.Task[Any]) -> bool:
        """Forget `task`'s deadline; whether the deadline came (and cancelled the task)."""
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(due, self._expire, loop)
        self._timer_at = due

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer: cancel the requests whose deadline has come; wait for the next one."""
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
        if self._due:
            self._arm(loop, min(self._due.values()))


class AiohttpTransport(BaseTransport):
    """A transport on `aiohttp.ClientSession`, for fan-out at several times httpx's rate.

    asyncio only. The session is created on the first request, in the running event loop.
    aiohttp itself keeps the attempt's deadline (`ClientTimeout(total=...)`, which also covers
    reading the body), so no second timer runs per request.

    Args:
        session: a caller-owned session (proxies, TLS, tracing); the transport never closes it
            unless `close_session` says so. Its timeout is replaced by the request's. A
            caller's session does not tell connection set-up from sending, so a deadline hit
            with it counts as "may have been sent".
        max_connections: the size of the connection pool of an owned session.
        close_session: hand `session` over: `aclose()` closes it too.

    Raises:
        ImportError: aiohttp is not installed.
        RuntimeError: created inside an event loop other than asyncio's (trio).
    """

    __slots__ = (
        "_closed",
        "_deadlines",
        "_errors",
        "_max_connections",
        "_owns_session",
        "_plain",
        "_progress",
        "_session",
        "_session_headers",
        "_timeouts",
        "user_agent",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        max_connections: int = 100,
        close_session: bool = False,
    ) -> None:
        _require_aiohttp()
        _require_asyncio(running=False)
        import aiohttp  # noqa: PLC0415 -- an optional extra

        #: The User-Agent the client sends through this transport (unless default_headers set one).
        self.user_agent = f"quickchat-async/{__version__} aiohttp/{aiohttp.__version__}"
        self._session = session
        #: The default headers of the owned session (see `_open`), and a session without
        #: any on the same connections, for requests with other headers.
        self._session_headers: Mapping[str, str] | None = None
        self._plain: aiohttp.ClientSession | None = None
        self._owns_session = session is None or close_session
        self._max_connections = max_connections
        self._closed = False
        self._progress: _Progress = {}
        self._errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self._deadlines = _Deadlines()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._session is not None else "unopened"
        return f"<AiohttpTransport {state} max_connections={self._max_connections}>"

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The underlying session; None until the first request of an owned one."""
        return self._session

    def _open(self, request: ChatRequest) -> aiohttp.ClientSession:
        """Create the owned session, with the first request's headers as its defaults.

        A request whose headers are those same ones (nearly every request of a client) then
        passes none: aiohttp builds and checks a request's own headers anew each time, which
        costs 5% of its instructions per request (callgrind, 64 in flight against nginx). A
        request with other headers goes through `_plain_session` instead: aiohttp adds a
        request's headers over the session's, so those of the first request would go out too.
        """
        import aiohttp  # noqa: PLC0415 -- an optional extra

        _require_asyncio(running=True)
        connector = _connector_class()(self._progress, self._max_connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # conversations must not share cookies
            timeout=aiohttp.ClientTimeout(total=None),
            headers=request.headers,
            auto_decompress=False,  # inflated by `_read_capped`, within the size cap
        )
        self._session_headers = request.headers
        return self._session

    def _plain_session(self, session: aiohttp.ClientSession) -> aiohttp.ClientSession:
        """A session with no default headers, on the owned session's connections."""
        if self._plain is None:
            import aiohttp  # noqa: PLC0415 -- an optional extra

            self._plain = aiohttp.ClientSession(
                connector=session.connector,
                connector_owner=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
        return self._plain

    def _timeout(self, timeout: Timeout) -> aiohttp.ClientTimeout:
        """The limit for connecting (`sock_connect`); the attempt's own is kept by `send`.

        `ceil_threshold=inf` keeps the limit exact (aiohttp rounds long ones up to the next
        second otherwise).
        """
        found = self._timeouts.get(timeout.connect)
        if found is None:
            import aiohttp  # noqa: PLC0415 -- an optional extra

            found = aiohttp.ClientTimeout(
                total=None, sock_connect=timeout.connect, ceil_threshold=math.inf
            )
            if len(self._timeouts) < 8:  # noqa: PLR2004 -- a client uses one or two
                self._timeouts[timeout.connect] = found
        return found

    async def send(self, request: ChatRequest, /) -> HTTPResponse:
        """POST the request and read the response, within `request.timeout`.

        Raises:
            APIConnectionError: no complete response (`APITimeoutError` for deadlines).
            ClientClosedError: the transport, or the caller's session, was closed.
            RuntimeError: not running on asyncio.
        """
        if self._closed:
            raise ClientClosedError("This AiohttpTransport is closed.")
        session = self._session or self._open(request)
        if session.closed:  # a caller's, closed: aiohttp would raise a bare RuntimeError
            raise ClientClosedError(
                "The aiohttp.ClientSession this AiohttpTransport sends through is closed. Keep "
                "it open while the client uses it, or leave the session to the transport."
            )
        same_headers = request.headers is self._session_headers
        if not same_headers and self._session_headers is not None:
            session = self._plain_session(session)
        progress, task = self._progress, cast("asyncio.Task[Any]", asyncio.current_task())
        total, deadlines = request.timeout.total, self._deadlines
        cancelling = task.cancelling()
        progress[task] = True
        if total is not None:
            deadlines.start(task, total)
        try:
            async with session.post(
                request.url,
                data=request.body,
                # Read inline, never bound to a local: they hold the credential (tracebacks).
                headers=None if same_headers else request.headers,
                allow_redirects=False,
                raise_for_status=False,  # the SDK judges the status, whatever the session says
                timeout=self._timeout(request.timeout),
                auto_decompress=False,  # inflated by `_read_capped`, within the size cap
            ) as response:
                limit = request.max_response_bytes
                declared = response.content_length
                if (
                    declared is not None
                    and declared <= limit
                    and "Content-Encoding" not in response.headers
                ):
                    content, truncated = await response.read(), False
                else:
                    content, truncated = await _read_capped(response, limit)
        except asyncio.CancelledError as cancelled:
            if deadlines.stop(task) and task.uncancel() <= cancelling:
                scrubbed(cancelled)  # it stays as the context: its frames hold the request
                expired = TimeoutError()
                raise _error(expired, request.url, may_be_sent=progress[task]) from expired
            raise
        except self._errors as exc:
            error = _error(exc, request.url, may_be_sent=progress[task])
            raise error from scrubbed(_without_headers(exc))
        finally:
            deadlines.stop(task)
            del progress[task]
        return HTTPResponse(response.status, response.headers, content, truncated)

    async def aclose(self) -> None:
        """Close the session if this transport owns it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._plain is not None:  # leaves the connections to the owned session
            await self._plain.close()
        if self._owns_session and self._session is not None:
            await self._session.close()


def _error(exc: BaseException, url: str, *, may_be_sent: bool) -> QuickchatError:
    """Translate what `send` caught.

    When the deadline (`ClientTimeout.total`) ends, aiohttp cancels what it was doing and
    raises a bare `TimeoutError`; the connector's tracking tells whether that was before any
    byte of the request could go out.
    """
    import aiohttp  # noqa: PLC0415 -- an optional extra

    if not isinstance(exc, aiohttp.ClientError):
        return deadline_error(url=url, cause=exc, sent=may_be_sent)
    not_sent, maybe_sent = _tables()
    return classify(
        exc,
        url=url,
        tables=((not_sent, False), (maybe_sent, may_be_sent)),
        timeout=isinstance(exc, aiohttp.ServerTimeoutError),
        otherwise_sent=may_be_sent,
    )


def _without_headers(exc: BaseException) -> BaseException:
    """`exc`, its aiohttp response errors stripped of the request's headers (the credential).

    aiohttp keeps them in `ClientResponseError.request_info`, which its repr shows.
    """
    import aiohttp  # noqa: PLC0415 -- an optional extra
    from multidict import CIMultiDict, CIMultiDictProxy  # noqa: PLC0415 -- aiohttp's own

    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        exc.request_info = aiohttp.RequestInfo(
            info.url, info.method, CIMultiDictProxy(CIMultiDict[str]()), info.real_url
        )
    return exc


@functools.cache
def _tables() -> tuple[ErrorTable, ErrorTable]:
    """Aiohttp's errors raised before any byte went out, and those raised once it may have."""
    import aiohttp  # noqa: PLC0415 -- an optional extra

    not_sent: ErrorTable = (
        (aiohttp.ConnectionTimeoutError, "timed out connecting to"),
        (aiohttp.ClientConnectorError, "could not connect to"),
        (aiohttp.InvalidURL, "cannot use the URL"),
    )
    maybe_sent: ErrorTable = (
        (aiohttp.SocketTimeoutError, "timed out waiting for the reply from"),
        (aiohttp.ServerTimeoutError, "timed out talking to"),
        (aiohttp.ServerDisconnectedError, "lost the connection to"),
        (aiohttp.ClientPayloadError, "got a cut-short reply from"),
        (aiohttp.ClientConnectionError, "lost the connection to"),
        (aiohttp.ClientResponseError, "got a malformed HTTP response from"),
    )
    return not_sent, maybe_sent


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the decoded body; say whether more was left unread.

    `send` reads a body of a known, small enough length itself. The body arrives raw
    (`auto_decompress=False`) and is inflated within the limit (`CappedBody`).

    Raises:
        aiohttp.ClientPayloadError: an encoding the SDK does not decode, or corrupt data.
    """
    import aiohttp  # noqa: PLC0415 -- an optional extra

    try:
        encoding = response.headers.get("Content-Encoding", "")
        body = CappedBody(limit, encoding, status=response.status)
        stream = response.content
        while raw := await stream.readany():
            if body.add(raw):
                response.close()  # the rest is never read: the connection cannot be reused
                break
        return body.content()
    except UndecodableError as exc:
        response.close()
        raise aiohttp.ClientPayloadError(f"Could not decode the body: {exc}") from None
