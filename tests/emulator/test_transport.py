"""EmulatorTransport: the service core through httpx2, in process, failing as a socket would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import httpx2
import pytest

from quickchat_async.emulator import (
    EmulatorService,
    EmulatorTransport,
    ErrorText,
    Fault,
    FaultKind,
    Outcome,
)

from .conftest import SCENARIO_ID, TOKEN, current, make_service


pytestmark = pytest.mark.anyio

URL = "http://emulator/chat"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(name="http")
async def _http(service: EmulatorService) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=EmulatorTransport(service)) as http:
        yield http


async def post(http: httpx2.AsyncClient, body: object = None, **options: object) -> httpx2.Response:
    """POST a current-flavor request to the test scenario."""
    return await http.post(URL, json=current() if body is None else body, headers=AUTH, **options)  # type: ignore[arg-type]


async def read_into(response: httpx2.Response, chunks: list[bytes]) -> None:
    """Read the body into `chunks`, keeping what arrived if the read fails."""
    async for chunk in response.aiter_raw():
        chunks.append(chunk)  # noqa: PERF401 -- a comprehension would lose them on error


class TestChat:
    async def test_reply(self, http: httpx2.AsyncClient, service: EmulatorService):
        """A valid request gets the documented JSON, recorded by the service."""
        response = await post(http)

        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        data = response.json()
        assert data["conv_id"] == "conv-1"
        assert data["ord_number"] == 3
        assert service.user_messages("conv-1") == ("Hello!",)
        assert response.extensions["http_version"] == b"HTTP/1.1"

    async def test_any_host(self, http: httpx2.AsyncClient):
        """The host is ignored: only the path matters."""
        response = await http.post("https://app.quickchat.ai/chat", json=current(), headers=AUTH)

        assert response.status_code == 200

    async def test_documented_error(self, http: httpx2.AsyncClient):
        """Errors come back as the core's plain text, with its status."""
        response = await post(http, {"scenario_id": "nope", "text": "Hi"})

        assert response.status_code == 404
        assert response.text == ErrorText.NO_SCENARIO.format(scenario_id="nope")

    async def test_other_path(self, http: httpx2.AsyncClient, service: EmulatorService):
        """Other paths get a 404 and never reach the core."""
        response = await http.post("http://emulator/_emulator/stats", json={})

        assert response.status_code == 404
        assert response.text == "Not Found"
        assert service.stats().requests == 0

    async def test_other_method(self, http: httpx2.AsyncClient, service: EmulatorService):
        """Other methods on /chat get a 405 that allows POST."""
        response = await http.get(URL)

        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert service.stats().requests == 0

    async def test_latency(self):
        """The service's latency delays the answer, within the read timeout."""
        service = make_service(latency=0.01)
        async with httpx2.AsyncClient(transport=EmulatorTransport(service)) as http:
            assert (await post(http)).status_code == 200

    def test_repr(self, service: EmulatorService):
        """The repr names the service and no credential."""
        assert repr(EmulatorTransport(service)).startswith("<EmulatorTransport <EmulatorService")
        assert TOKEN not in repr(EmulatorTransport(service))


class TestFaults:
    @pytest.mark.parametrize("kind", [FaultKind.DROP_BEFORE, FaultKind.DROP_AFTER])
    async def test_drop(self, http: httpx2.AsyncClient, service: EmulatorService, kind):
        """A dropped connection is httpx2's RemoteProtocolError, with no response."""
        service.faults.script([kind])

        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            await post(http)

    async def test_truncated(self, http: httpx2.AsyncClient, service: EmulatorService):
        """A truncated body: the bytes that arrived, then RemoteProtocolError."""
        service.faults.script(["truncated"])
        received: list[bytes] = []

        async with http.stream("POST", URL, json=current(), headers=AUTH) as response:
            assert response.status_code == 200
            with pytest.raises(httpx2.RemoteProtocolError, match="complete message body"):
                await read_into(response, received)

        assert received
        assert len(b"".join(received)) == int(response.headers["content-length"]) // 2

    async def test_reset_mid_body(self, http: httpx2.AsyncClient, service: EmulatorService):
        """A reset mid-body is httpx2's ReadError."""
        service.faults.script(["reset_mid_body"])

        with pytest.raises(httpx2.ReadError, match="reset by peer"):
            await post(http)

    async def test_drip(self, http: httpx2.AsyncClient, service: EmulatorService):
        """A dripped body arrives whole, chunk_size bytes at a time."""
        service.faults.script([Fault("drip", chunk_size=16, interval=0.001)])

        async with http.stream("POST", URL, json=current(), headers=AUTH) as response:
            chunks = [chunk async for chunk in response.aiter_raw()]

        body = b"".join(chunks)
        assert len(chunks) == -(-len(body) // 16)
        assert all(len(c) == 16 for c in chunks[:-1])
        assert httpx2.Response(200, content=body).json()["conv_id"] == "conv-1"

    async def test_drip_slower_than_read_timeout(
        self, http: httpx2.AsyncClient, service: EmulatorService
    ):
        """A gap between chunks longer than the read timeout is a ReadTimeout."""
        service.faults.script([Fault("drip", chunk_size=8, interval=5.0)])

        with pytest.raises(httpx2.ReadTimeout):
            await post(http, timeout=httpx2.Timeout(5.0, read=0.01))

    async def test_slow_headers_within_timeout(
        self, http: httpx2.AsyncClient, service: EmulatorService
    ):
        """Late headers that arrive within the read timeout are a normal reply."""
        service.faults.script([Fault("slow_headers", delay=0.01)])

        assert (await post(http)).json()["ord_number"] == 3

    async def test_slow_headers_time_out(self, http: httpx2.AsyncClient, service: EmulatorService):
        """Headers later than the read timeout are a ReadTimeout; the turn was recorded."""
        service.faults.script(["slow_headers"])

        with pytest.raises(httpx2.ReadTimeout):
            await post(http, timeout=httpx2.Timeout(5.0, read=0.01))
        assert service.user_messages("conv-1") == ("Hello!",)

    async def test_endless_times_out(self, http: httpx2.AsyncClient, service: EmulatorService):
        """An endless body with slow filler times out on read."""
        service.faults.script([Fault("endless", interval=5.0)])

        with pytest.raises(httpx2.ReadTimeout):
            await post(http, timeout=httpx2.Timeout(5.0, read=0.01))

    # asyncio only: on trio, stopping early leaves httpx2's own async generators to the garbage
    # collector, which trio reports as a ResourceWarning (encode/httpx#3686).
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_endless_without_timeout(
        self, http: httpx2.AsyncClient, service: EmulatorService
    ):
        """With no read timeout, an endless body keeps coming until the client stops reading."""
        service.faults.script([Fault("endless", chunk_size=4, interval=0.0)])

        async with http.stream("POST", URL, json=current(), headers=AUTH, timeout=None) as response:
            received = b""
            async with contextlib.aclosing(response.aiter_raw()) as chunks:
                async for chunk in chunks:
                    received += chunk
                    if len(received) > 100:
                        break

        assert received.startswith(b'{"reply": "....')
        assert "content-length" not in response.headers

    async def test_huge_body(self, http: httpx2.AsyncClient, service: EmulatorService):
        """A huge body arrives whole, at the size asked for."""
        service.faults.script([Fault("huge_body", size=50_000)])

        response = await post(http)

        assert len(response.content) == 50_000
        assert response.json()["reply"].endswith("...")


class _Fixed:
    """A stand-in service that answers every request with one outcome."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def handle_chat(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        return self.outcome


async def test_empty_body():
    """An outcome without a body is a response without content."""
    transport = EmulatorTransport(_Fixed(Outcome(status=204)))  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport) as http:
        response = await http.post(URL, json={"scenario_id": SCENARIO_ID})

    assert response.status_code == 204
    assert response.content == b""
