"""Fan-out: many conversations at once, with bounded concurrency and an optional rate limit.

A job is a script of turns (`Script`, or just a list of texts) or a coroutine function taking a
`Conversation`. Each job runs in its own conversation; a failing one is reported in its
`FanOutResult` and never cancels the others.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias, Union, cast

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from ._conversation import Conversation
from ._exceptions import ValidationError
from ._models import Reply
from ._ratelimit import Limiter, RateLimiter, all_of
from ._sender import AsyncSender
from ._types import JSONValue
from ._validation import check_count


if TYPE_CHECKING:
    from typing import Self

__all__ = ["FanOut", "FanOutOptions", "FanOutResult", "Job", "Script"]


def _as_tuple(turns: Iterable[str]) -> tuple[str, ...]:
    return tuple(turns)


@attrs.frozen(slots=True)
class Script:
    """The turns of one fan-out conversation, sent in order.

    ``Script(["Hi", "Where is my parcel?"], kb_topic="shipping")``: the turns come first, the
    rest by keyword.

    Attributes:
        turns: the user's messages.
        kb_topic: the conversation's Knowledge Base topic.
        metadata: `client_metadata` for every message.
        context: `message_context` for every message (legacy flavor).
    """

    turns: tuple[str, ...] = attrs.field(converter=_as_tuple)
    kb_topic: str | None = attrs.field(default=None, kw_only=True)
    metadata: Mapping[str, JSONValue] | None = attrs.field(default=None, kw_only=True)
    context: str | None = attrs.field(default=None, kw_only=True)


#: What a fan-out runs: a `Script`, a list of texts, or ``async def job(conv) -> value``.
Job: TypeAlias = Union[Script, Iterable[str], Callable[[Conversation], Awaitable[object]]]  # noqa: UP007 -- a runtime alias on Python 3.10


@attrs.frozen(slots=True)
class FanOutResult:
    """How one job ended.

    Attributes:
        index: the job's position in the input.
        conversation: the conversation it ran in (conv_id, history).
        replies: the replies it received, in order (for a script: up to the failed turn).
        value: what a coroutine job returned; for a script, `replies`.
        error: the exception that ended the job, or None when it succeeded.
        elapsed: seconds from the job's start to its end.
    """

    index: int
    conversation: Conversation
    replies: tuple[Reply, ...]
    value: object
    error: Exception | None
    elapsed: float

    @property
    def ok(self) -> bool:
        """Whether the job ended without an error."""
        return self.error is None

    def __repr__(self) -> str:
        outcome = "ok" if self.error is None else type(self.error).__name__
        return (
            f"<FanOutResult #{self.index} {outcome} conv_id={self.conversation.conv_id!r} "
            f"replies={len(self.replies)}>"
        )


OnResult: TypeAlias = Callable[[FanOutResult], object]


def _concurrency(value: object) -> int:
    return check_count(value, name="concurrency", minimum=1)


@attrs.frozen(kw_only=True)
class FanOutOptions:
    """How a fan-out runs: see `AsyncQuickchat.fan_out`.

    Attributes:
        concurrency: how many jobs run at once.
        rate_limiter: the limiter every request of the fan-out waits on, retries included (the
            client's own limiter, if any, applies too).
        on_result: called with each result as it arrives (a plain or an async function).
    """

    concurrency: int = attrs.field(default=64, converter=_concurrency)
    rate_limiter: Limiter | None = None
    on_result: OnResult | None = None

    @classmethod
    def of(
        cls,
        *,
        concurrency: int,
        rate_per_second: float | None,
        rate_per_minute: float | None,
        rate_limiter: Limiter | None,
        on_result: OnResult | None,
    ) -> FanOutOptions:
        """The options of `fan_out`'s arguments: a limiter made of the rates, if given.

        Raises:
            ValidationError: a bad concurrency or rate, or both rates and a limiter.
        """
        if rate_limiter is not None and (rate_per_second or rate_per_minute):
            raise ValidationError("Pass rate_limiter= or rate_per_second/rate_per_minute.")
        if rate_limiter is None and (rate_per_second is not None or rate_per_minute is not None):
            rate_limiter = RateLimiter(per_second=rate_per_second, per_minute=rate_per_minute)
        return cls(concurrency=concurrency, rate_limiter=rate_limiter, on_result=on_result)


class FanOut:
    """Runs jobs concurrently and yields their results as they finish.

    Made by `AsyncQuickchat.fan_out_stream()`; use it as ``async with ... as results:`` and
    iterate. Leaving the block early cancels the jobs still running.
    """

    __slots__ = ("_client", "_jobs", "_options", "_receive", "_task_group")

    def __init__(
        self, client: AsyncSender, jobs: Iterable[Job], options: FanOutOptions | None = None
    ) -> None:
        options = options or FanOutOptions()
        # Every request of the fan-out's conversations waits on its limiter, retries included,
        # then on the client's: the shared limit is taken last, when the request is about to go.
        if options.rate_limiter is not None:
            client = client.with_options(
                rate_limiter=all_of(options.rate_limiter, client.rate_limiter)
            )
        self._client = client
        self._jobs: Iterator[tuple[int, Job]] = enumerate(jobs)
        self._options = options
        self._task_group: anyio.abc.TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[FanOutResult] | None = None

    def __repr__(self) -> str:
        options = self._options
        return f"<FanOut concurrency={options.concurrency} rate={options.rate_limiter!r}>"

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("A FanOut runs once.")
        concurrency = self._options.concurrency
        send, self._receive = anyio.create_memory_object_stream[FanOutResult](concurrency)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        async with send:
            for _ in range(concurrency):
                self._task_group.start_soon(self._worker, send.clone())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None  # noqa: S101 -- entered first
        assert self._receive is not None  # noqa: S101
        self._task_group.cancel_scope.cancel()  # jobs still running when the block ends
        self._receive.close()
        return await self._task_group.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> FanOutResult:
        if self._receive is None:
            raise RuntimeError("Iterate a FanOut inside `async with`.")
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def _worker(self, send: anyio.abc.ObjectSendStream[FanOutResult]) -> None:
        on_result = self._options.on_result
        async with send:
            for index, job in self._jobs:  # shared: each worker takes the next job
                result = await _run(self._client, index, job)
                if on_result is not None:
                    outcome = on_result(result)
                    if inspect.isawaitable(outcome):
                        await outcome
                await send.send(result)


async def _run(client: AsyncSender, index: int, job: Job) -> FanOutResult:
    """Run one job to its end; any exception is its result, not its siblings' problem."""
    start = time.perf_counter()
    replies: list[Reply] = []
    conversation: Conversation | None = None
    value: object = None
    try:
        if callable(job):
            conversation = Conversation(client)
            value = await job(conversation)
        else:
            script = job if isinstance(job, Script) else Script(turns=_texts(job))
            conversation = Conversation(client, kb_topic=script.kb_topic, metadata=script.metadata)
            for text in script.turns:
                reply = await conversation.say(text, context=script.context)
                replies.append(reply)
            value = tuple(replies)
    except Exception as exc:  # noqa: BLE001 -- one job's failure, of any kind, is its result
        error: Exception | None = exc
    else:
        error = None
    if conversation is None:  # the job was refused before it started
        conversation = Conversation(client)
    return FanOutResult(
        index, conversation, tuple(replies), value, error, time.perf_counter() - start
    )


def _texts(job: object) -> tuple[str, ...]:
    if isinstance(job, str):
        return (job,)
    if not isinstance(job, Iterable):
        raise ValidationError(
            "A fan-out job is a Script, a list of texts, or an async function of a Conversation,"
            f" not {type(job).__name__}."
        )
    return tuple(cast("Iterable[str]", job))
