"""The Quickchat side of a chat bot, shared by the Telegram, Slack, Discord and FastAPI examples.

`Chats` holds the app's one `AsyncQuickchat` client and one conversation store, and keeps one
Quickchat conversation per user (or thread) with `conversation_for()`. It turns every outcome
into a message fit for a user, logs the details for you, and understands two commands:

- `/reset` starts a new conversation;
- `/topic <name>` starts a new conversation on that Knowledge Base topic (`kb_topic`).
  Quickchat filters the Knowledge Base only when the topic is on every message of a
  conversation, so a topic always starts a new one.

The framework examples only connect it to their platform: they create a `Chats` in their
framework's start-up hook, close it in the shutdown hook, show the typing indicator and deliver
the answer. Copy this file next to your bot.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio

from quickchat_async import (
    AsyncQuickchat,
    ConversationNotFoundError,
    ConversationStore,
    QuickchatError,
    RateLimitError,
    ServiceUnavailableError,
    StoreError,
    StoreLockTimeoutError,
    UnconfirmedStartError,
    ValidationError,
)
from quickchat_async.testing import Emulator


logger = logging.getLogger("botkit")

#: What users read when something went wrong. They never see an error's own text.
BUSY = "I'm a bit busy right now. Please try again in a minute."
MAYBE_LOST = (
    "Sorry, I lost track of that one: your message may not have reached me. "
    "Could you send it again?"
)
UNAVAILABLE = "Sorry, I can't answer right now. Please try again later."
RESTARTING = "I'm restarting. Please try again in a moment."
REFUSED = "Sorry, I can't send that message."
HELP = "Commands: /reset starts a new conversation, /topic <name> starts one on a topic."

#: A Knowledge Base topic as users may type it after /topic.
TOPIC = re.compile(r"[\w-]{1,64}")


class Outcome(enum.Enum):
    """What became of a message: each platform shows it its own way (the web API as a status)."""

    OK = "ok"  #: the Agent's reply, or a command's confirmation
    BUSY = "busy"  #: rate-limited, or the user's previous message is still being answered
    MAYBE_LOST = "outcome_unknown"  #: the message may have reached Quickchat; no reply came
    UNAVAILABLE = "unavailable"  #: Quickchat is down, or the bot is misconfigured
    REFUSED = "refused"  #: the message cannot be sent as it is


@dataclass(frozen=True)
class Answer:
    """What to tell the user, and why; `retry_after` is in seconds, when Quickchat said."""

    text: str
    outcome: Outcome = Outcome.OK
    retry_after: float | None = None


def make_client() -> AsyncQuickchat:
    """Your AI Agent when QUICKCHAT_* credentials are set, else the emulator, in process."""
    if os.environ.get("QUICKCHAT_API_TOKEN") or os.environ.get("QUICKCHAT_API_KEY"):
        return AsyncQuickchat()
    print("(no QUICKCHAT_API_TOKEN set: talking to the bundled emulator)", file=sys.stderr)
    return Emulator().client()


def parse_command(text: str) -> tuple[str, str] | None:
    """`("reset", "")` or `("topic", "billing")` for a command; None for a message."""
    if not text.startswith("/"):
        return None
    name, _, args = text[1:].partition(" ")
    return name.partition("@")[0].lower(), args.strip()  # Telegram sends /topic@SomeBot


def chunks(text: str, size: int) -> list[str]:
    """`text` cut into pieces of at most `size` characters, at a line or a space if possible."""
    pieces: list[str] = []
    while len(text) > size:
        cut = max(text.rfind("\n", 0, size), text.rfind(" ", 0, size))
        cut = cut if cut > size // 2 else size
        pieces.append(text[:cut])
        text = text[cut:].lstrip()
    return [*pieces, text] if text or not pieces else pieces


class Chats:
    """One conversation per user key, kept in `store`, through `client`.

    Args:
        client: the app's client, created once at start-up; `aclose()` closes it.
        store: where conversations live (`SQLiteStore` for one bot process); closed too.
        deadline: seconds a turn may take before the user hears it may not have arrived
            (None: the client's own timeouts and retries bound it).
    """

    def __init__(
        self, client: AsyncQuickchat, store: ConversationStore, *, deadline: float | None = None
    ) -> None:
        self.client = client
        self.store = store
        self.deadline = deadline
        # A topic chosen with /topic, until the first reply of its conversation is stored.
        self._topics: dict[str, str] = {}
        self._lines: dict[str, _Line] = {}
        self._idle: anyio.Event | None = None
        self._closing = False

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Let turns in flight finish (up to `grace` seconds), then close the store and client."""
        self._closing = True
        if self._lines:
            self._idle = anyio.Event()
            with anyio.move_on_after(grace):
                await self._idle.wait()
        try:
            await self.store.aclose()
        finally:
            await self.client.aclose()

    @contextlib.asynccontextmanager
    async def in_order(self, user_key: str) -> AsyncIterator[None]:
        """Hold while answering a message and delivering the answer.

        A user's messages are then answered one at a time and their answers go out in the order
        the messages came, while other users' messages go on in parallel.
        """
        line = self._lines.setdefault(user_key, _Line())
        line.users += 1
        try:
            async with line.lock:
                yield
        finally:
            line.users -= 1
            if not line.users:
                del self._lines[user_key]
                if not self._lines and self._idle is not None:
                    self._idle.set()

    async def answer(self, user_key: str, text: str) -> Answer:
        """Answer a message: a /command, or text for the AI Agent."""
        command = parse_command(text)
        if command is None:
            return await self.say(user_key, text)
        name, args = command
        if name == "reset":
            return await self.reset(user_key)
        if name == "topic":
            return await self.set_topic(user_key, args)
        return Answer(HELP)

    async def say(self, user_key: str, text: str) -> Answer:
        """Send `text` in the user's conversation; the reply, or what to tell the user."""
        if self._closing:
            return Answer(RESTARTING, Outcome.UNAVAILABLE)
        try:
            return await self._say(user_key, text)
        except QuickchatError as exc:
            return _failure(user_key, exc)

    async def _say(self, user_key: str, text: str, *, again: bool = True) -> Answer:
        conv = await self.client.conversation_for(
            user_key, store=self.store, kb_topic=self._topics.get(user_key)
        )
        try:
            # The whole turn, retries and waits included; past it, an APITimeoutError says
            # whether the message may have arrived.
            reply = await conv.say(text, deadline=self.deadline)
        except ConversationNotFoundError as exc:
            if not again:
                raise
            # The stored conv_id is unknown to Quickchat (deleted, or another Agent's):
            # nothing was recorded, so the message goes again, in a new conversation.
            logger.warning("%s: %s Starting a new conversation.", user_key, exc.message)
            if conv.kb_topic is not None:
                self._topics.setdefault(user_key, conv.kb_topic)
            await conv.forget()
        except UnconfirmedStartError:
            if not again:
                raise
            # The user's first message got no reply, and they are writing again.
            logger.info("%s: first message unconfirmed; starting a new conversation", user_key)
            await conv.start_over()
        else:
            self._topics.pop(user_key, None)
            return Answer(reply.text)
        return await self._say(user_key, text, again=False)

    async def reset(self, user_key: str) -> Answer:
        """Forget the user's conversation (and topic): their next message starts a new one."""
        self._topics.pop(user_key, None)
        return await self._forget(user_key, "OK, let's start over.")

    async def set_topic(self, user_key: str, topic: str) -> Answer:
        """Start a new conversation on `topic`, or tell the user the current one if empty."""
        if not topic:
            current = self._topics.get(user_key)
            if current is None:
                try:
                    conv = await self.client.conversation_for(user_key, store=self.store)
                except QuickchatError as exc:
                    return _failure(user_key, exc)
                current = conv.kb_topic
            about = f"The topic is {current}." if current else "No topic is set."
            return Answer(f"{about} /topic <name> starts a conversation on another one.")
        if not TOPIC.fullmatch(topic):
            return Answer("A topic is one word, like /topic billing.", Outcome.REFUSED)
        answer = await self._forget(user_key, f"OK, a new conversation about {topic}.")
        if answer.outcome is Outcome.OK:
            self._topics[user_key] = topic
        return answer

    async def knows(self, user_key: str) -> bool:
        """Whether a conversation is stored (or a topic chosen) for this key."""
        if user_key in self._topics:
            return True
        try:
            conv = await self.client.conversation_for(user_key, store=self.store)
        except QuickchatError as exc:
            _failure(user_key, exc)
            return False
        return bool(conv.history)

    async def _forget(self, user_key: str, done: str) -> Answer:
        try:
            conv = await self.client.conversation_for(user_key, store=self.store)
            await conv.forget()
        except QuickchatError as exc:
            return _failure(user_key, exc)
        return Answer(done)


@dataclass
class _Line:
    """The queue of one user's messages: their lock, and how many hold it or wait."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


def _failure(user_key: str, exc: QuickchatError) -> Answer:
    """What to tell the user about `exc`; the details go to the log, for you."""
    name = type(exc).__name__
    if isinstance(exc, StoreError) and exc.reply is not None:
        # The Agent answered but the store did not record it: the user still gets the reply.
        logger.error("%s: reply not stored: %s: %s", user_key, name, exc.message)
        return Answer(exc.reply.text)
    if isinstance(exc, RateLimitError | StoreLockTimeoutError):
        logger.warning("%s: busy: %s: %s", user_key, name, exc.message)
        return Answer(BUSY, Outcome.BUSY, getattr(exc, "retry_after", None))
    if isinstance(exc, ServiceUnavailableError):
        logger.warning("%s: Quickchat unavailable: %s", user_key, exc.message)
        return Answer(UNAVAILABLE, Outcome.UNAVAILABLE, exc.retry_after)
    if exc.outcome_unknown:
        logger.warning("%s: outcome unknown: %s: %s", user_key, name, exc.message)
        return Answer(MAYBE_LOST, Outcome.MAYBE_LOST)
    if isinstance(exc, ValidationError):
        logger.warning("%s: refused: %s", user_key, exc.message)
        return Answer(REFUSED, Outcome.REFUSED)
    # Authentication, a wrong scenario_id, the network, the store: for you, not the user.
    logger.error("%s: %s: %s", user_key, name, exc.message)
    return Answer(UNAVAILABLE, Outcome.UNAVAILABLE)
