"""examples/slack_bot.py: signed Events API requests in, a fake Slack Web API on loopback out."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from quickchat_async import AsyncQuickchat, MemoryStore
from quickchat_async.testing import Emulator

from ._support import (
    framework,
    free_port,
    load_example,
    running,
    serving,
    until,
    wait_listening,
)


framework("slack_bolt")
from aiohttp import web  # noqa: E402 -- once the framework is known to be there
from slack_sdk.signature import SignatureVerifier  # noqa: E402 -- once the framework is known to be there


SIGNING_SECRET = "test-signing-secret"
BOT_USER = "UBOT"


@pytest.fixture(name="anyio_backend")
def _anyio_backend() -> str:
    """Bolt's AsyncApp is an asyncio library."""
    return "asyncio"


class FakeSlack:
    """Slack's Web API as far as the app uses it: auth.test, chat.postMessage, reactions."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ts = itertools.count(1)
        self.app = web.Application()
        self.app.router.add_post("/api/{method}", self.handle)

    def posts(self) -> list[dict[str, Any]]:
        return [params for method, params in self.calls if method == "chat.postMessage"]

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = dict(request.query)  # slack_sdk sends some methods' arguments in the URL
        if request.content_type == "application/json":
            params |= await request.json()
        else:
            params |= await request.post()
        self.calls.append((method, params))
        result: dict[str, Any] = {"ok": True}
        if method == "auth.test":
            result |= {"team_id": "T1", "user_id": BOT_USER, "bot_id": "BBOT", "user": "quickchat"}
        elif method == "chat.postMessage":
            result |= {"channel": params["channel"], "ts": f"1800000000.{next(self._ts):06d}"}
        return web.json_response(result)


class Workspace:
    """Sends the app signed event requests, as Slack does."""

    def __init__(self, app_url: str) -> None:
        self.app_url = app_url
        self._ids = itertools.count(1)
        self.verifier = SignatureVerifier(SIGNING_SECRET)

    def event(self, text: str, *, kind: str = "app_mention", **fields: Any) -> dict[str, Any]:
        """An event_callback body: `text` from user U1 in channel C1, and `fields`."""
        number = next(self._ids)
        event = {
            "type": kind,
            "user": "U1",
            "text": text,
            "ts": f"1700000000.{number:06d}",
            "channel": "C1",
            **fields,
        }
        return {
            "type": "event_callback",
            "team_id": "T1",
            "api_app_id": "A1",
            "event": event,
            "event_id": f"Ev{number}",
            "event_time": 1700000000 + number,
            "authorizations": [{"team_id": "T1", "user_id": BOT_USER, "is_bot": True}],
        }

    async def send(self, body: dict[str, Any], *, secret: str = SIGNING_SECRET) -> httpx.Response:
        content = json.dumps(body)
        timestamp = str(int(time.time()))
        signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=content)
        async with httpx.AsyncClient(base_url=self.app_url) as http:
            return await http.post(
                "/slack/events",
                content=content,
                headers={
                    "Content-Type": "application/json",
                    "X-Slack-Request-Timestamp": timestamp,
                    "X-Slack-Signature": signature,
                },
            )


@pytest.fixture(name="slack")
async def _slack() -> AsyncIterator[tuple[FakeSlack, Workspace, Emulator, list[AsyncQuickchat]]]:
    """The app served on loopback, talking to the fake Web API and a served emulator."""
    fake = FakeSlack()
    clients: list[AsyncQuickchat] = []
    async with Emulator(latency=0.3) as emulator, serving(fake.app) as api_url:

        def make_client() -> AsyncQuickchat:
            clients.append(emulator.client())
            return clients[-1]

        app = load_example("slack_bot.py").create_app(
            make_client,
            MemoryStore,
            token="xoxb-test",
            signing_secret=SIGNING_SECRET,
            api_url=f"{api_url}/api/",
        )
        async with serving(app) as app_url:
            yield fake, Workspace(app_url), emulator, clients


class TestSlackBot:
    @pytest.mark.network
    @pytest.mark.anyio
    async def test_acknowledges_at_once_and_answers_in_the_thread_after(self, slack):
        """The event gets its 200 before the Agent replies; the answer goes to the thread."""
        fake, workspace, emulator, _ = slack
        body = workspace.event(f"<@{BOT_USER}> How do refunds work?")
        started = time.monotonic()
        response = await workspace.send(body)
        acked_after = time.monotonic() - started
        assert response.status_code == 200
        assert acked_after < 0.3  # the emulator takes 0.3 s to reply
        assert fake.posts() == []

        await until(fake.posts)
        (post,) = fake.posts()
        assert post["channel"] == "C1"
        assert post["thread_ts"] == body["event"]["ts"]
        assert "Return policy: refunds" in post["text"]
        (conversation,) = emulator.conversations()
        assert emulator.user_messages(conversation.conv_id) == ("How do refunds work?",)

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_wears_the_hourglass_while_the_agent_thinks(self, slack):
        """The message wears the hourglass reaction until its answer is posted."""
        fake, workspace, _, _ = slack
        body = workspace.event(f"<@{BOT_USER}> Hello!")
        await workspace.send(body)
        await until(lambda: any(method == "reactions.remove" for method, _ in fake.calls))
        methods = [method for method, _ in fake.calls if method != "auth.test"]
        assert methods == ["reactions.add", "chat.postMessage", "reactions.remove"]
        reaction = next(params for method, params in fake.calls if method == "reactions.add")
        expected = {
            "channel": "C1",
            "timestamp": body["event"]["ts"],
            "name": "hourglass_flowing_sand",
        }
        assert reaction.items() >= expected.items()

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_keeps_one_conversation_per_thread(self, slack):
        """People's replies in the app's thread continue its conversation; the rest is ignored."""
        fake, workspace, emulator, _ = slack
        first = workspace.event(f"<@{BOT_USER}> Hello!")
        await workspace.send(first)
        await until(lambda: len(fake.posts()) == 1)
        thread = first["event"]["ts"]
        await workspace.send(
            workspace.event("How do refunds work?", kind="message", thread_ts=thread)
        )
        await workspace.send(workspace.event("Not for the bot", kind="message", thread_ts="1.2"))
        await workspace.send(
            workspace.event("Another app", kind="message", thread_ts=thread, bot_id="B2")
        )
        await workspace.send(workspace.event(f"<@{BOT_USER}> Hi", thread_ts="1.3"))
        await until(lambda: len(fake.posts()) == 3)

        assert [post["thread_ts"] for post in fake.posts()] == [thread, thread, "1.3"]
        texts = sorted(emulator.user_messages(c.conv_id) for c in emulator.conversations())
        assert texts == [("Hello!", "How do refunds work?"), ("Hi",)]

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_answers_an_event_sent_twice_once(self, slack):
        """Slack's retry of an event the app already has does not resend the message."""
        fake, workspace, emulator, _ = slack
        body = workspace.event(f"<@{BOT_USER}> Hello!")
        assert (await workspace.send(body)).status_code == 200
        assert (await workspace.send(body)).status_code == 200
        await until(fake.posts)
        await until(lambda: any(method == "reactions.remove" for method, _ in fake.calls))
        assert len(fake.posts()) == 1
        (conversation,) = emulator.conversations()
        assert emulator.user_messages(conversation.conv_id) == ("Hello!",)

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_refuses_a_request_not_signed_by_slack(self, slack):
        """A request signed with another secret is a 401, and nothing reaches the Agent."""
        fake, workspace, emulator, _ = slack
        response = await workspace.send(workspace.event("<@UBOT> Hi"), secret="not-slack")
        assert response.status_code == 401
        assert emulator.stats().requests == 0
        assert fake.posts() == []

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_topic_command_and_escaped_replies(self, slack):
        """A mention with /topic starts a conversation on that kb_topic; "&" is escaped."""
        fake, workspace, emulator, _ = slack
        thread = {"thread_ts": "1.5"}
        await workspace.send(workspace.event(f"<@{BOT_USER}> /topic billing", **thread))
        await until(lambda: len(fake.posts()) == 1)
        await workspace.send(workspace.event("What payment methods?", kind="message", **thread))
        await until(lambda: len(fake.posts()) == 2)

        assert fake.posts()[0]["text"] == "OK, a new conversation about billing."
        assert "Pebble &amp; Pine gift cards" in fake.posts()[1]["text"]  # shown as "&"
        (conversation,) = emulator.conversations()
        assert emulator.messages(conversation.conv_id)[1].client_metadata == {"kb_topic": "billing"}

    @pytest.mark.network
    @pytest.mark.anyio
    async def test_closes_the_client_when_the_server_stops(self):
        """The server's start-up hook creates the Quickchat client, its clean-up hook closes it."""
        clients: list[AsyncQuickchat] = []

        def make_client() -> AsyncQuickchat:
            clients.append(Emulator().client())
            return clients[-1]

        app = load_example("slack_bot.py").create_app(
            make_client,
            MemoryStore,
            token="xoxb-test",
            signing_secret=SIGNING_SECRET,
        )
        async with serving(app):
            assert not clients[0].is_closed
        assert clients[0].is_closed


class TestSlackBotCommand:
    @pytest.mark.network
    @pytest.mark.slow
    @pytest.mark.anyio
    async def test_runs_with_the_command_of_the_readme(self, tmp_path):
        """`python examples/slack_bot.py` answers a mention from the emulator, stops on Ctrl-C."""
        fake = FakeSlack()
        port = free_port()
        async with serving(fake.app) as api_url:
            env = {
                "SLACK_BOT_TOKEN": "xoxb-test",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": f"{api_url}/api/",
                "PORT": str(port),
                "BOT_DB": str(tmp_path / "slack.db"),
            }
            async with running("slack_bot.py", env) as stderr:
                await wait_listening(port)
                workspace = Workspace(f"http://127.0.0.1:{port}")
                await workspace.send(workspace.event(f"<@{BOT_USER}> How do refunds work?"))
                await until(fake.posts, within=20)
        (post,) = fake.posts()
        assert "Return policy: refunds" in post["text"]
        assert any("talking to the bundled emulator" in line for line in stderr)
