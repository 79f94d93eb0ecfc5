"""`QuickchatUser`: load tests of an AI Agent on Locust, on one machine or many.

`Locust <https://locust.io>`_ runs its users as greenlets under gevent, in one process or in
worker processes on several machines under a master, with a web UI, charts, and CSV and HTML
reports. A `QuickchatUser` holds a blocking `Quickchat` client aimed at Locust's ``host``
(the credential and scenario from ``QUICKCHAT_API_TOKEN`` or ``QUICKCHAT_API_KEY`` and
``QUICKCHAT_SCENARIO_ID``), on geventhttpclient, the engine of Locust's own `FastHttpUser`. Each
turn of a conversation opened with `QuickchatUser.conversation()` (and each `QuickchatUser.say()`)
fires Locust's request event: request type ``chat``, the name the task gives (the conversation's
`name`) or else its kb_topic, the response time (retries included), the reply's length in bytes, and
the SDK's error on failure. Locust's statistics, charts, reports and distributed mode work
unchanged.

A failed turn ends its task (`TurnError`, a `RescheduleTask`), as the rest of a scripted
conversation would make no sense; a task may catch it, and read the SDK's error in `error`.

Install it with ``pip install "quickchat-async[locust]"``. Importing this module imports
Locust, which monkey-patches the process for gevent: import it from locustfiles run by the
``locust`` command (which patches before anything else is imported). Elsewhere, import
``locust`` before ``quickchat_async``: gevent cannot patch `ssl` once it is in use.

Example locustfile::

    from locust import between, task

    from quickchat_async.locust import QuickchatUser


    class Visitor(QuickchatUser):
        wait_time = between(1, 5)

        @task
        def ask_about_refunds(self):
            conv = self.conversation(kb_topic="billing")
            conv.say("Hello!")  # reported as "billing"
            conv.name = "refunds"
            conv.say("How do refunds work?")  # reported as "refunds"

Run it with ``locust -f locustfile.py --host https://app.quickchat.ai``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Unpack, cast

from locust import User
from locust.env import Environment
from locust.exception import RescheduleTask

from ._config import CallOptions
from ._exceptions import QuickchatError, ValidationError
from ._models import Reply
from ._sync_client import Quickchat
from ._sync_conversation import SyncConversation
from ._types import JSONValue


__all__ = ["LocustConversation", "QuickchatUser", "TurnError"]

#: Locust's request type for a turn.
REQUEST_TYPE = "chat"
#: The name of a turn with no name and no kb_topic.
NO_TOPIC = "(no kb_topic)"


class TurnError(RescheduleTask):
    """A turn failed: it is in Locust's statistics, and its task ends unless it catches this.

    Attributes:
        error: the SDK's error (`RateLimitError`, `APITimeoutError`...).
    """

    def __init__(self, error: QuickchatError) -> None:
        super().__init__(str(error))
        self.error = error


class QuickchatUser(User):
    """A Locust user that talks to an AI Agent through a blocking `Quickchat` client.

    The client goes to Locust's ``host`` (``--host``, or the class's ``host``; without one, to
    ``QUICKCHAT_BASE_URL`` or Quickchat itself) and reads its credential and scenario from the
    ``QUICKCHAT_*`` variables. It is closed when the user stops: a subclass that overrides
    `on_stop` calls ``super().on_stop()``.

    Attributes:
        client: the user's blocking client (its own connections). Turns sent through it
            directly are not reported to Locust; use `conversation()` or `say()`.
        client_options: more `Quickchat` options for every user of the class (``timeout``,
            ``max_retries``, ``deadline``...).
        engine: ``"gevent"`` (geventhttpclient, the default: several times less CPU a
            request) or ``"httpx2"``.
    """

    abstract = True
    client_options: ClassVar[Mapping[str, Any]] = {}
    engine: ClassVar[Literal["gevent", "httpx2"]] = "gevent"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.client = Quickchat(base_url=self.host, transport=self.engine, **self.client_options)

    def conversation(
        self,
        *,
        name: str | None = None,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> LocustConversation:
        """Open a conversation whose turns are reported to Locust.

        Args:
            name: the name its turns are reported under; by default their kb_topic.
            conv_id: an existing conversation to continue; None starts a new one.
            kb_topic: the Knowledge Base topic, sent on every request.
            metadata: `client_metadata` for every message.
            max_history: keep only the last N turns in `history` (None keeps all).
        """
        return LocustConversation(
            self,
            name=name,
            conv_id=conv_id,
            kb_topic=kb_topic,
            metadata=metadata,
            max_history=max_history,
        )

    def say(
        self,
        text: str,
        *,
        name: str | None = None,
        conv_id: str | None = None,
        client_metadata: Mapping[str, JSONValue] | None = None,
        message_context: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Reply:
        """Send one stateless message (`Quickchat.say`), reported to Locust.

        Raises:
            TurnError: the turn failed; it was reported as a failure.
            ValidationError: bad input (a bug in the task: not reported as a request).
        """
        topic = client_metadata.get("kb_topic") if client_metadata else None
        return self.report(
            name or (topic if isinstance(topic, str) else NO_TOPIC),
            lambda: self.client.say(
                text,
                conv_id=conv_id,
                client_metadata=client_metadata,
                message_context=message_context,
                **options,
            ),
        )

    def report(self, name: str, turn: Callable[[], Reply]) -> Reply:
        """Run one turn, timed, and fire Locust's request event for it.

        Raises:
            TurnError: the turn failed; it was reported as a failure.
            ValidationError: bad input, raised as it is.
        """
        start_time = time.time()
        started = time.perf_counter()
        try:
            reply = turn()
        except ValidationError:
            raise
        except QuickchatError as exc:
            self._fire(name, start_time, started, None, exc)
            raise TurnError(exc) from exc
        self._fire(name, start_time, started, reply, None)
        return reply

    def _fire(
        self,
        name: str,
        start_time: float,
        started: float,
        reply: Reply | None,
        exc: QuickchatError | None,
    ) -> None:
        environment = cast("Environment", self.environment)
        # Locust's EventHook.fire and User.context are not annotated.
        context = cast("dict[str, Any]", self.context())  # pyright: ignore[reportUnknownMemberType]
        environment.events.request.fire(  # type: ignore[no-untyped-call] # pyright: ignore[reportUnknownMemberType]
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0 if reply is None else len(reply.html.encode()),
            response=reply,
            context=context,
            exception=exc,
            start_time=start_time,
            url=self.client.config.url,
        )

    def on_stop(self) -> None:
        """Close the client."""
        self.client.close()


class LocustConversation(SyncConversation):
    """A `SyncConversation` whose turns are reported to Locust (see `QuickchatUser`).

    Args:
        user: the Locust user it belongs to.
        name: the name its turns are reported under; by default their kb_topic.
        conv_id: an existing conversation to continue; None starts a new one.
        kb_topic: the Knowledge Base topic, sent on every request.
        metadata: `client_metadata` for every message.
        max_history: keep only the last N turns in `history` (None keeps all).
    """

    __slots__ = ("_name", "_user")

    def __init__(
        self,
        user: QuickchatUser,
        *,
        name: str | None = None,
        conv_id: str | None = None,
        kb_topic: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        max_history: int | None = None,
    ) -> None:
        super().__init__(
            user.client,
            conv_id=conv_id,
            kb_topic=kb_topic,
            metadata=metadata,
            max_history=max_history,
        )
        self._user = user
        self._name = name

    @property
    def name(self) -> str | None:
        """The name its turns are reported under (else their kb_topic); set it between turns."""
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value

    def say(
        self,
        text: str,
        *,
        context: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        **options: Unpack[CallOptions],
    ) -> Reply:
        """Send a message (see `SyncConversation.say`), reported to Locust under `name`.

        Raises:
            TurnError: the turn failed; it was reported as a failure.
            ValidationError: bad input (a bug in the task: not reported as a request).
        """
        return self._user.report(
            self._name or self.kb_topic or NO_TOPIC,
            lambda: super(LocustConversation, self).say(
                text, context=context, metadata=metadata, **options
            ),
        )
