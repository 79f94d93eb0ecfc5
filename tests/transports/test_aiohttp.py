"""AiohttpTransport: what is aiohttp's own (its session, asyncio only, its errors).

What every engine shares is in test_contract.py; this transport runs there on asyncio.
"""

from __future__ import annotations

import sys

import aiohttp
import anyio
import pytest
import trio
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from quickchat_async import (
    AiohttpTransport,
    APIConnectionError,
    APITimeoutError,
    AsyncQuickchat,
    ChatRequest,
    ClientClosedError,
    QuickchatError,
    Timeout,
)
from quickchat_async._transports._aiohttp import _error
from quickchat_async.testing import Emulator
from tests.conftest import SCENARIO_ID, TOKEN

from .conftest import blackhole


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is an asyncio library."""
    return "asyncio"


def chat_request(url: str, timeout: Timeout | None = None) -> ChatRequest:
    """A current-flavor request for the test scenario."""
    return ChatRequest(
        f"{url}/chat",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        b'{"scenario_id":"%s","text":"Hi"}' % SCENARIO_ID.encode(),
        timeout or Timeout(),
    )


class TestSession:
    async def test_opened_on_first_use(self, served: Emulator):
        """The transport sends on its own, opening its session on the first request."""
        async with AiohttpTransport() as transport:
            assert transport.session is None
            response = await transport.send(chat_request(served.base_url))
            assert repr(transport).startswith("<AiohttpTransport open")
            assert transport.session is not None
            async with transport.session.get(f"{served.base_url}/_emulator/stats") as stats:
                assert stats.status == 200  # the session also works outside send()

        assert response.status_code == 200
        assert b"conv_id" in response.content
        assert response.headers["content-type"] == response.headers["Content-Type"]

    async def test_callers_session_stays_open(self, served: Emulator):
        """A caller's session is used and left open, unless handed over."""
        async with aiohttp.ClientSession() as session:
            transport = AiohttpTransport(session)
            async with served.client(transport=transport) as client:
                assert (await client.say("Hello")).text
            assert transport.session is session
            assert not session.closed

            handed = AiohttpTransport(session, close_session=True)
            await handed.aclose()
            assert session.closed

    async def test_callers_session_cannot_tell_connecting(self):
        """With a caller's session, a deadline hit while connecting counts as maybe sent."""
        with blackhole() as port:
            async with aiohttp.ClientSession() as session, AiohttpTransport(session) as transport:
                request = chat_request(f"http://127.0.0.1:{port}", Timeout(total=0.2, connect=None))
                with anyio.fail_after(4), pytest.raises(APITimeoutError) as info:
                    await transport.send(request)

        assert info.value.outcome_unknown

    async def test_closed_transport_refuses(self):
        """A closed transport raises ClientClosedError; closing twice is harmless."""
        transport = AiohttpTransport(max_connections=3)
        assert repr(transport) == "<AiohttpTransport unopened max_connections=3>"
        await transport.aclose()
        await transport.aclose()

        assert repr(transport) == "<AiohttpTransport closed max_connections=3>"
        with pytest.raises(ClientClosedError):
            await transport.send(chat_request("http://127.0.0.1:9"))

    async def test_many_deadlines_are_cached_boundedly(self):
        """aiohttp timeouts are built once per Timeout, for a bounded number of them."""
        transport = AiohttpTransport()
        for n in range(100):
            transport._timeout(Timeout(total=1 + n, connect=2))

        assert transport._timeout(Timeout(total=1, connect=2)).sock_connect == 2
        assert len(transport._timeouts) == 64


class TestAsyncioOnly:
    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_refused_on_trio(self):
        """Under trio, the aiohttp transport says to use another engine."""
        with pytest.raises(RuntimeError, match="asyncio only, not on trio"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport="aiohttp")

    def test_refused_on_trio_at_first_send(self):
        """Made outside any loop and used under trio, it fails at once with the same advice."""
        transport = AiohttpTransport()

        async def main() -> None:
            await transport.send(chat_request("http://127.0.0.1:9"))

        with pytest.raises(RuntimeError, match="asyncio only"):
            trio.run(main)

    def test_refused_outside_a_loop(self):
        """Sending needs a running asyncio loop (the session binds to it)."""
        sending = AiohttpTransport().send(chat_request("http://127.0.0.1:9"))

        with pytest.raises(RuntimeError, match="no event loop"):
            sending.send(None)
        sending.close()

    def test_missing_aiohttp_says_what_to_install(self, monkeypatch):
        """Without aiohttp installed, choosing it names the extra to install."""
        monkeypatch.setitem(sys.modules, "aiohttp", None)

        with pytest.raises(ImportError, match=r"quickchat-async\[aiohttp\]"):
            AsyncQuickchat(token=TOKEN, scenario_id=SCENARIO_ID, transport="aiohttp")


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("exc", "cls", "unknown", "words"),
        [
            (
                aiohttp.ConnectionTimeoutError("slow"),
                APITimeoutError,
                False,
                "timed out connecting",
            ),
            (aiohttp.InvalidURL("nope"), APIConnectionError, False, "cannot use the URL"),
            (aiohttp.SocketTimeoutError("slow"), APITimeoutError, True, "waiting for the reply"),
            (aiohttp.ServerTimeoutError("slow"), APITimeoutError, True, "timed out talking"),
            (aiohttp.ServerDisconnectedError(), APIConnectionError, True, "lost the connection"),
            (aiohttp.ClientPayloadError("cut"), APIConnectionError, True, "cut-short reply"),
            (aiohttp.ClientOSError(104, "reset"), APIConnectionError, True, "lost the connection"),
            (aiohttp.ClientError("odd"), APIConnectionError, True, "failed talking"),
            (TimeoutError(), APITimeoutError, True, "per-attempt deadline"),
        ],
    )
    def test_each_error(self, exc, cls, unknown, words):
        """Each aiohttp error maps to one class, with whether the message may have landed."""
        error = _error(exc, "http://127.0.0.1:1/chat", may_be_sent=True)

        assert type(error) is cls
        assert error.outcome_unknown is unknown
        assert words in error.message
        assert isinstance(error, QuickchatError)

    def test_malformed_response(self):
        """aiohttp's response errors (a bad status line) are a malformed response."""
        url = yarl.URL("http://127.0.0.1:1/chat")
        info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
        exc = aiohttp.ClientResponseError(info, (), status=400, message="bad")

        error = _error(exc, "u", may_be_sent=False)

        assert "malformed" in error.message
        assert not error.outcome_unknown
