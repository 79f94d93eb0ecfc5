"""The Transport contract, kept by every engine over real loopback sockets.

Each test runs on httpx2 and httpx (asyncio and trio) and on aiohttp (asyncio only): the same
request on the wire, the same deadline, the same bounded body, no redirects, and the same
errors with the same "may it have been sent?" answer. The first group scripts every byte of
the server; the second talks to the project's emulator served on loopback.
"""

from __future__ import annotations

import gzip
import json
import logging

import anyio
import pytest

from quickchat_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    ResponseTooLargeError,
    ScenarioNotFoundError,
    Timeout,
    TurnStatus,
    UnexpectedResponseError,
    __version__,
)
from quickchat_async.emulator import Fault
from quickchat_async.testing import Emulator
from tests.conftest import API_KEY, SCENARIO_ID, TOKEN, library_frames_with_locals

from .conftest import Serve, blackhole, client_for, header_values, ok_response, refused_port


pytestmark = pytest.mark.anyio


class TestOnTheWire:
    async def test_round_trip(self, serve: Serve, transport_name):
        """A request carries the Bearer token and the JSON body; keep-alive reuses the socket."""

        async def answer(stream, request):
            await stream.send(ok_response())

        server = await serve(answer)
        async with client_for(server.url, transport_name) as client:
            await client.say("Hello!")
            reply = await client.say("Again", conv_id="c-1")

        assert reply.text == "Hi!"
        assert server.connections == 1
        request = server.requests[1]
        assert request.startswith(b"POST /chat HTTP/1.1\r\n")
        assert header_values(request, "Authorization") == [f"Bearer {TOKEN}"]
        assert header_values(request, "Content-Type") == ["application/json"]
        body = request.partition(b"\r\n\r\n")[2]
        assert json.loads(body) == {"scenario_id": SCENARIO_ID, "conv_id": "c-1", "text": "Again"}

    @pytest.mark.parametrize("custom", [False, True])
    async def test_user_agent_names_the_engine(self, serve: Serve, transport_name, custom):
        """The User-Agent names the SDK and the HTTP engine in use, unless the caller sets one."""

        async def answer(stream, request):
            await stream.send(ok_response())

        server = await serve(answer)
        headers = {"user-agent": "my-bot/1.0"} if custom else None
        async with client_for(server.url, transport_name, default_headers=headers) as client:
            await client.say("Hello")

        agents = header_values(server.requests[0], "User-Agent")
        if custom:
            assert agents == ["my-bot/1.0"]
        else:
            (agent,) = agents
            assert agent.startswith(f"quickchat-async/{__version__} {transport_name}/")
            others = {"httpx2", "httpx", "aiohttp"} - {transport_name}
            assert not any(f" {other}/" in agent for other in others)

    async def test_redirect_not_followed(self, serve: Serve, transport_name):
        """A 3xx is an error naming the target; the credential never goes there."""

        async def redirect(stream, request):
            await stream.send(
                b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\n"
                b"Content-Length: 0\r\n\r\n"
            )

        server = await serve(redirect)
        async with client_for(server.url, transport_name) as client:
            with pytest.raises(APIStatusError, match=r"redirect \(302\) to 'http://127.0.0.1:9"):
                await client.say("Hello")

        assert len(server.requests) == 1

    @pytest.mark.parametrize(("size", "too_large"), [(100, False), (200_000, True)])
    async def test_compressed_body_capped_after_decoding(
        self, serve: Serve, transport_name, size, too_large
    ):
        """A gzip body is decoded; the cap applies to the decoded size (no zip bombs)."""
        body = gzip.compress(b'{"conv_id":"c","reply":"' + b"a" * size + b'"}')

        async def gzipped(stream, request):
            await stream.send(ok_response(body, b"Content-Encoding: gzip"))

        server = await serve(gzipped)
        async with client_for(server.url, transport_name, max_response_bytes=64 * 1024) as client:
            if too_large:
                with pytest.raises(ResponseTooLargeError):
                    await client.say("Hello")
            else:
                assert len((await client.say("Hello")).text) == size

    @pytest.mark.parametrize("fault", ["cut short", "corrupt"])
    async def test_compressed_body_that_does_not_decode(self, serve: Serve, transport_name, fault):
        """A gzip body cut short or corrupt, in a well-framed response, is a typed error."""
        whole = gzip.compress(b'{"conv_id":"c","reply":"' + b"a" * 1000 + b'"}')
        body = whole[:-12] if fault == "cut short" else whole[:10] + b"\xff" * 20 + whole[30:]

        async def gzipped(stream, request):
            await stream.send(ok_response(body, b"Content-Encoding: gzip"))

        server = await serve(gzipped)
        async with client_for(server.url, transport_name) as client:
            with pytest.raises(APIConnectionError, match="decode") as info:
                await client.say("Hello")

        assert info.value.outcome_unknown
        assert len(server.requests) == 1  # the server may have recorded it: not resent

    @pytest.mark.parametrize(
        "encoded",
        [
            (b"br", b"\x8b\x02\x80busy\x03"),
            (b"gzip", b"\x1f\x8b not gzip at all"),
            (b"gzip", gzip.compress(b'{"error": "busy"}')[:-12]),
        ],
        ids=["unknown encoding", "corrupt", "cut short"],
    )
    async def test_error_reply_that_does_not_decode_keeps_its_status(
        self, serve: Serve, transport_name, encoded
    ):
        """A 503 or 401 whose body cannot be decoded is still that status: retried, or named."""
        encoding, body = encoded
        answers = iter([b"503 Service Unavailable", b"401 Unauthorized"])

        async def failing(stream, request):
            await stream.send(
                b"HTTP/1.1 "
                + next(answers)
                + b"\r\nContent-Encoding: "
                + encoding
                + f"\r\nRetry-After: 0\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

        server = await serve(failing)
        async with client_for(server.url, transport_name, max_retries=1) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.say("Hello")

        assert len(server.requests) == 2  # the 503 was retried
        assert info.value.status_code == 401

    @pytest.mark.parametrize("declared", [True, False])
    async def test_body_capped(self, serve: Serve, transport_name, declared):
        """A body over the limit, with its length declared or not, is cut at the limit."""
        body = b'{"conv_id":"c","reply":"' + b"a" * 100_000 + b'"}'

        async def big(stream, request):
            if declared:
                await stream.send(ok_response(body))
            else:
                await stream.send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n0\r\n\r\n"
                )

        server = await serve(big)
        async with client_for(server.url, transport_name, max_response_bytes=4096) as client:
            with pytest.raises(ResponseTooLargeError, match="max_response_bytes=4096") as info:
                await client.say("Hello")

        assert info.value.outcome_unknown

    async def test_body_delimited_by_close(self, serve: Serve, transport_name):
        """A body without a length, ended by closing the connection, is read whole."""

        async def odd(stream, request):
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                b'{"conv_id": "c-1", "reply": "Hi!"}'
            )
            await stream.aclose()

        server = await serve(odd)
        async with client_for(server.url, transport_name) as client:
            assert (await client.say("Hello")).text == "Hi!"


class TestFailures:
    async def test_connection_refused(self, transport_name, caplog):
        """Nobody listening: retried max_retries times, then APIConnectionError, not sent."""
        client = client_for(f"http://127.0.0.1:{refused_port()}", transport_name)

        with caplog.at_level(logging.INFO, logger="quickchat_async"):
            async with client:
                with pytest.raises(APIConnectionError, match="could not connect") as info:
                    await client.say("Hello!")

        assert not info.value.outcome_unknown
        assert "The message was not sent" in info.value.message
        assert len([r for r in caplog.records if r.name == "quickchat_async"]) == 2

    async def test_connect_timeout(self, transport_name):
        """A connection that cannot open in time is an APITimeoutError, not sent."""
        with blackhole() as port:
            client = client_for(
                f"http://127.0.0.1:{port}",
                transport_name,
                timeout=Timeout(total=5, connect=0.1),
                max_retries=0,
            )
            async with client:
                with anyio.fail_after(4), pytest.raises(APITimeoutError) as info:
                    await client.say("Hello!")

        assert not info.value.outcome_unknown

    async def test_deadline_while_connecting(self, transport_name):
        """The attempt's deadline ending while connecting leaves the message unsent."""
        with blackhole() as port:
            client = client_for(
                f"http://127.0.0.1:{port}",
                transport_name,
                timeout=Timeout(total=0.2, connect=None),
                max_retries=0,
            )
            async with client:
                with anyio.fail_after(4), pytest.raises(APITimeoutError) as info:
                    await client.say("Hello!")

        assert not info.value.outcome_unknown

    async def test_dropped_after_reading_is_ambiguous(self, serve: Serve, transport_name):
        """The server reads the message and hangs up: outcome unknown, not retried."""

        async def hang_up(stream, request):
            await stream.aclose()

        server = await serve(hang_up)
        async with client_for(server.url, transport_name) as client:
            with pytest.raises(APIConnectionError, match="may or may not have recorded") as info:
                await client.say("Hello!")

        assert info.value.outcome_unknown
        assert len(server.requests) == 1

    async def test_drip_hits_the_overall_deadline(self, serve: Serve, transport_name):
        """A body dripped a byte at a time cannot outlast the per-attempt deadline."""

        async def drip(stream, request):
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n"
            )
            while True:
                await stream.send(b" ")
                await anyio.sleep(0.05)

        server = await serve(drip)
        timeout = Timeout(total=0.6, connect=0.5)
        async with client_for(server.url, transport_name, timeout=timeout) as client:
            with anyio.fail_after(5):
                with pytest.raises(APITimeoutError, match="per-attempt deadline") as info:
                    await client.say("Hello!")

        assert info.value.outcome_unknown
        assert len(server.requests) == 1

    async def test_slow_headers_time_out(self, serve: Serve, transport_name):
        """Headers slower than the deadline: APITimeoutError, outcome unknown, not retried."""

        async def never(stream, request):
            await anyio.sleep_forever()

        server = await serve(never)
        async with client_for(server.url, transport_name, timeout=0.4) as client:
            with anyio.fail_after(5), pytest.raises(APITimeoutError) as info:
                await client.say("Hello!")

        assert info.value.outcome_unknown
        assert len(server.requests) == 1

    @pytest.mark.parametrize("flavor", ["token", "api_key"])
    async def test_tracebacks_with_locals_hide_credentials(
        self, serve: Serve, transport_name, flavor
    ):
        """A transport failure formatted with every frame's locals shows no credential."""

        async def hang_up(stream, request):
            await stream.aclose()

        server = await serve(hang_up)
        secret = {"token": TOKEN, "api_key": API_KEY}[flavor]
        credential = {"token": None, flavor: secret}
        client = client_for(server.url, transport_name, **credential)
        async with client:
            with pytest.raises(APIConnectionError) as info:
                await client.say("Hello!")

        formatted = library_frames_with_locals(info.value)
        assert secret not in formatted
        assert "send" in formatted  # the frames themselves are still there


class TestConnections:
    async def test_waiting_turns_proceed_when_a_slot_frees(self, serve: Serve, transport_name):
        """More turns than connections all complete, never more than max_connections at once."""
        in_flight = 0
        peak = 0

        async def count(stream, request):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.sleep(0.02)
            in_flight -= 1
            await stream.send(ok_response())

        server = await serve(count)
        async with (
            client_for(server.url, transport_name, max_connections=3) as client,
            anyio.create_task_group() as tg,
        ):
            for _ in range(12):
                tg.start_soon(client.say, "hi")

        assert len(server.requests) == 12
        assert peak == 3
        assert server.connections <= 3


class TestAgainstTheEmulator:
    async def test_conversation(self, served: Emulator, transport_name):
        """A conversation keeps its conv_id and sends kb_topic and metadata on every turn."""
        async with served.client(transport=transport_name) as client:
            conv = client.conversation(kb_topic="billing", metadata={"user": "u-1"})
            await conv.say("Hello")
            reply = await conv.say("How do refunds work?")

        assert reply.conv_id == conv.conv_id
        assert "refund" in reply.text.lower()
        assert served.user_messages(reply.conv_id) == ("Hello", "How do refunds work?")
        sent = [m for m in served.messages(reply.conv_id) if m.client_metadata]
        assert {m.client_metadata["kb_topic"] for m in sent} == {"billing"}

    async def test_legacy_flavor(self, served: Emulator, transport_name):
        """The api_key flavor works over the same transport."""
        async with served.client(flavor="legacy", transport=transport_name) as client:
            reply = await client.say("Hello", message_context="The user is on the pricing page.")

        (message,) = [m for m in served.messages(reply.conv_id) if m.text == "Hello"]
        assert message.flavor.value == "legacy"
        assert message.message_context == "The user is on the pricing page."

    async def test_rate_limit_is_retried(self, served: Emulator, transport_name):
        """A 429 with Retry-After is retried, and the turn succeeds once."""
        served.faults.script([Fault("rate_limit", retry_after=0), None])
        async with served.client(transport=transport_name) as client:
            reply = await client.say("Hello")

        assert served.user_messages(reply.conv_id) == ("Hello",)
        assert served.stats().by_status == {429: 1, 200: 1}

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"token": "wrong-token"}, AuthenticationError),
            ({"scenario_id": "no-such-agent"}, ScenarioNotFoundError),
        ],
    )
    async def test_error_statuses(self, served: Emulator, transport_name, options, error):
        """The server's refusals map onto the same error tree."""
        async with served.client(transport=transport_name, **options) as client:
            with pytest.raises(error):
                await client.say("Hello")

    async def test_dropped_turn_is_unconfirmed_then_settled(self, served: Emulator, transport_name):
        """A drop after the turn was recorded is ambiguous; the next reply settles it."""
        async with served.client(transport=transport_name) as client:
            conv = client.conversation()
            await conv.say("one")
            served.faults.script(["drop_after"])
            with pytest.raises(APIConnectionError) as info:
                await conv.say("two")
            await conv.say("three")

        assert info.value.outcome_unknown
        assert [turn.status for turn in conv.history] == [
            TurnStatus.CONFIRMED,
            TurnStatus.LANDED,
            TurnStatus.CONFIRMED,
        ]

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            ("truncated", APIConnectionError),
            ("reset_mid_body", APIConnectionError),
            ("not_json", UnexpectedResponseError),
            ("html_502", InternalServerError),
        ],
    )
    async def test_broken_replies(self, served: Emulator, transport_name, fault, error):
        """Cut, reset and malformed replies raise the same errors, never retried by default."""
        served.faults.script([fault])
        async with served.client(transport=transport_name) as client:
            with pytest.raises(error) as info:
                await client.say("Hello")

        assert info.value.outcome_unknown
        assert served.stats().requests == 1

    @pytest.mark.parametrize("fault", ["huge_body", Fault("endless", interval=0.001)])
    async def test_body_is_capped(self, served: Emulator, transport_name, fault):
        """A body over max_response_bytes, declared or endless, stops at the cap."""
        served.faults.script([fault])
        async with served.client(transport=transport_name, max_response_bytes=64 * 1024) as client:
            with anyio.fail_after(10), pytest.raises(ResponseTooLargeError):
                await client.say("Hello")
            served.faults.script([None])
            assert (await client.say("Hello again")).text  # the client is still usable

    async def test_slow_headers_time_out(self, served: Emulator, transport_name):
        """Headers later than the deadline: APITimeoutError, outcome unknown."""
        served.faults.script([Fault("slow_headers", delay=2)])
        async with served.client(transport=transport_name, timeout=0.3) as client:
            with anyio.fail_after(5), pytest.raises(APITimeoutError) as info:
                await client.say("Hello")

        assert info.value.outcome_unknown
