"""The blocking transports, and the emulator's blocking in-process transport."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import attrs
import httpx2
import pytest

from quickchat_async import (
    APITimeoutError,
    ChatRequest,
    HTTPResponse,
    SyncHttpx2Transport,
    SyncHttpxTransport,
    Timeout,
    __version__,
)
from quickchat_async.emulator import EmulatorService, Fault, SyncEmulatorTransport
from quickchat_async.testing import Emulator

from .conftest import SCENARIO, TOKEN


def chat_request(base_url: str, *, total: float = 5.0, limit: int = 1024 * 1024) -> ChatRequest:
    """A current-flavor request for the canary scenario, built by hand."""
    body = f'{{"scenario_id":"{SCENARIO.scenario_id}","text":"Hello"}}'.encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return ChatRequest(f"{base_url}/chat", headers, body, Timeout(total=total), limit)


class TestSyncHttpx2Transport:
    def test_owned_client_is_closed_and_named(self):
        """An owned client is closed with the transport; the User-Agent names httpx2."""
        transport = SyncHttpx2Transport(max_connections=3)
        assert repr(transport) == "<SyncHttpx2Transport owned httpx2.Client>"
        assert transport.user_agent.startswith(f"quickchat-async/{__version__} httpx2/")
        with transport:
            pass
        assert transport.client.is_closed

    @pytest.mark.parametrize("close_client", [False, True])
    def test_callers_client_is_closed_only_when_handed_over(self, close_client):
        """A caller's client stays open, unless close_client hands it over."""
        http = httpx2.Client()
        transport = SyncHttpx2Transport(http, close_client=close_client)
        owner = "owned" if close_client else "caller's"
        assert repr(transport) == f"<SyncHttpx2Transport {owner} httpx2.Client>"
        transport.close()
        assert http.is_closed is close_client
        http.close()

    def test_httpx_engine_too(self):
        """The httpx 0.28 twin is the same class on httpx's engine."""
        with SyncHttpxTransport() as transport:
            assert "httpx/" in transport.user_agent
            assert repr(transport) == "<SyncHttpxTransport owned httpx.Client>"

    def test_response_with_a_bounded_body(self, served: Emulator):
        """send() returns the status, the headers and at most max_response_bytes of the body."""
        served.faults.script([Fault("huge_body", size=64 * 1024)])
        with SyncHttpx2Transport() as transport:
            response = transport.send(chat_request(served.base_url, limit=4096))
        assert isinstance(response, HTTPResponse)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.truncated
        assert len(response.content) == 4096

    @pytest.mark.parametrize(
        "fault",
        [
            Fault("drip", chunk_size=1, interval=0.05),
            Fault("slow_headers", delay=3.0),
            Fault("endless", chunk_size=8, interval=0.05),
        ],
        ids=["drip", "slow headers", "endless"],
    )
    def test_the_attempt_keeps_its_deadline(self, served: Emulator, fault: Fault):
        """However the server drips, the attempt ends at Timeout.total (within a read's wait)."""
        served.faults.script([fault])
        with SyncHttpx2Transport() as transport:
            start = time.monotonic()
            with pytest.raises(APITimeoutError, match="per-attempt deadline") as info:
                transport.send(chat_request(served.base_url, total=0.5))
            elapsed = time.monotonic() - start
        assert 0.45 < elapsed < 1.0
        assert info.value.outcome_unknown

    def test_no_deadline_at_all(self, served: Emulator):
        """With `timeout=None` nothing bounds the attempt, and the reply still comes."""
        request = attrs.evolve(
            chat_request(served.base_url), timeout=Timeout(total=None, connect=None)
        )
        with SyncHttpx2Transport() as transport:
            assert transport.send(request).status_code == 200

    def test_a_phase_gets_only_what_is_left(self, served: Emulator):
        """After a slow connection pool wait or a long first phase, reads get what is left."""
        served.faults.script([Fault("slow_headers", delay=0.3), Fault("slow_headers", delay=3.0)])
        with SyncHttpx2Transport() as transport:
            assert transport.send(chat_request(served.base_url, total=1.0)).status_code == 200
            start = time.monotonic()
            with pytest.raises(APITimeoutError):
                transport.send(chat_request(served.base_url, total=1.0))
        assert time.monotonic() - start < 1.5


@contextlib.contextmanager
def one_exchange() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback server that answers one request (a chat reply) and keeps its bytes."""
    received: list[bytes] = []
    body = b'{"conv_id": "c-1", "reply": "Hi!"}'
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                data = b""
                while not data.endswith(b'"text":"Hello"}'):
                    data += connection.recv(65536)
                received.append(data)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
        thread.join(5)


class TestSyncOwnedPool:
    """An owned client's requests go straight to its pool, as the client would send them."""

    def test_the_clients_headers_under_the_requests(self):
        """The owned client's default headers go out, with the request's own."""
        with one_exchange() as (url, received), SyncHttpx2Transport() as transport:
            assert transport.send(chat_request(url)).status_code == 200
            defaults = transport.client.headers
        head = received[0].lower()
        assert f"accept-encoding: {defaults['Accept-Encoding']}\r\n".lower().encode() in head
        assert f"user-agent: {defaults['User-Agent']}\r\n".lower().encode() in head
        assert f"authorization: bearer {TOKEN}\r\n".lower().encode() in head

    def test_proxies_from_the_environment(self, monkeypatch):
        """With a proxy in the environment, the owned client sends through it, as httpx2 does."""
        with one_exchange() as (proxy, received):
            monkeypatch.setenv("HTTP_PROXY", proxy)
            for name in ("NO_PROXY", "no_proxy", "http_proxy"):
                monkeypatch.delenv(name, raising=False)
            with SyncHttpx2Transport() as transport:
                response = transport.send(chat_request("http://quickchat.invalid"))

        assert response.status_code == 200
        assert received[0].startswith(b"POST http://quickchat.invalid/chat HTTP/1.1\r\n")


class TestSyncEmulatorTransport:
    @pytest.fixture(name="http")
    def _http(self):
        service = EmulatorService(scenarios=[SCENARIO])
        with httpx2.Client(transport=SyncEmulatorTransport(service)) as http:
            yield http

    def test_answers_chat(self, http: httpx2.Client):
        """POST /chat is answered as the served emulator answers it."""
        response = http.post(
            "http://anywhere/chat",
            json={"scenario_id": SCENARIO.scenario_id, "text": "Hello"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200
        assert response.json()["ord_number"] == 3

    def test_other_paths_and_methods(self, http: httpx2.Client):
        """Other paths get a 404, other methods a 405 with Allow."""
        assert http.post("http://anywhere/other").status_code == 404
        response = http.get("http://anywhere/chat")
        assert (response.status_code, response.headers["allow"]) == (405, "POST")

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            ("drop_after", httpx2.RemoteProtocolError),
            ("truncated", httpx2.RemoteProtocolError),
            ("reset_mid_body", httpx2.ReadError),
        ],
    )
    def test_fails_as_a_socket_would(self, http: httpx2.Client, fault, error):
        """Connection-level faults raise httpx2's own errors."""
        transport = http._transport
        assert isinstance(transport, SyncEmulatorTransport)
        transport.service.faults.script([fault])
        with pytest.raises(error):
            http.post(
                "http://anywhere/chat",
                json={"scenario_id": SCENARIO.scenario_id, "text": "Hello"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )

    def test_waits_honour_the_read_timeout(self, http: httpx2.Client):
        """A delay longer than the read timeout raises ReadTimeout after the read timeout."""
        transport = http._transport
        assert isinstance(transport, SyncEmulatorTransport)
        transport.service.faults.script([Fault("slow_headers", delay=5.0)])
        start = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):
            http.post(
                "http://anywhere/chat",
                json={"scenario_id": SCENARIO.scenario_id, "text": "Hello"},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=0.2,
            )
        assert time.monotonic() - start < 1.0
