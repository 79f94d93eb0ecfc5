"""create_app: the emulator over HTTP, in process (ASGITransport) and on loopback (uvicorn)."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Message

from quickchat_async.emulator import (
    EmulatorService,
    ErrorText,
    Fault,
    ServerHandle,
    create_app,
    serve,
)

from .conftest import (
    API_KEY,
    OTHER_API_KEY,
    OTHER_TOKEN,
    SCENARIO_ID,
    TOKEN,
    current,
    legacy,
    make_service,
)


pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(name="http")
async def _http(service: EmulatorService) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling the app in process, with no socket."""
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as http:
        yield http


async def chat(
    http: httpx.AsyncClient, body: object, *, token: str | None = TOKEN
) -> httpx.Response:
    """POST /chat: a body that is not bytes is sent as JSON."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if isinstance(body, bytes):
        return await http.post("/chat", content=body, headers=headers)
    return await http.post("/chat", json=body, headers=headers)


class TestChat:
    async def test_current_flavor(self, http: httpx.AsyncClient, service: EmulatorService):
        """A Bearer request gets the current flavor's JSON, and the turn is recorded."""
        response = await chat(http, current("Hi", message_context="ctx"))

        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        data = response.json()
        assert "src" in data
        assert data["ord_number"] == 3
        assert service.messages(data["conv_id"])[1].message_context == "ctx"

    async def test_legacy_flavor(self, http: httpx.AsyncClient):
        """An api_key in the body gets the legacy JSON; a continuation omits conv_id."""
        first = (await chat(http, legacy(), token=None)).json()
        again = await chat(http, legacy("Again", conv_id=first["conv_id"]), token=None)

        assert list(first) == ["ord_number", "conv_id", "reply"]
        assert again.json() == {"ord_number": 5, "reply": again.json()["reply"]}

    @pytest.mark.parametrize(
        ("body", "token", "status", "text"),
        [
            ({"text": "Hi"}, TOKEN, 400, ErrorText.MISSING_SCENARIO_ID),
            ({"scenario_id": SCENARIO_ID}, TOKEN, 400, ErrorText.MISSING_TEXT),
            (current(), None, 400, ErrorText.NOT_AUTHENTICATED),
            (current(), "wrong", 400, ErrorText.NOT_AUTHENTICATED),
            (current(conv_id="c-404"), TOKEN, 400, "Conversation conv_id c-404 is not valid."),
            (
                current(scenario_id="nope"),
                TOKEN,
                404,
                "No implementation found for scenario_id nope",
            ),
            (current(), OTHER_TOKEN, 404, f"No implementation found for scenario_id {SCENARIO_ID}"),
            (current(message_context="x" * 1001), TOKEN, 400, ErrorText.MESSAGE_CONTEXT_TOO_LONG),
            (
                current(client_metadata=dict.fromkeys("abcdef", 1)),
                TOKEN,
                400,
                ErrorText.TOO_MANY_METADATA_KEYS,
            ),
            (legacy(text=""), None, 400, ErrorText.LEGACY_MISSING_PARAMETERS),
            ({"api_key": API_KEY, "text": "Hi"}, None, 400, ErrorText.LEGACY_MISSING_PARAMETERS),
            (legacy(conv_id="abcd"), None, 400, "conv_id abcd does not exist"),
            (
                legacy(message_context="x" * 1001),
                None,
                400,
                ErrorText.LEGACY_MESSAGE_CONTEXT_TOO_LONG,
            ),
            (legacy(api_key="wrong"), None, 401, ErrorText.UNAUTHORIZED),
            (legacy(api_key=OTHER_API_KEY), None, 401, ErrorText.UNAUTHORIZED),
            (
                legacy(client_metadata=dict.fromkeys("abcdef", 1)),
                None,
                400,
                ErrorText.TOO_MANY_METADATA_KEYS,
            ),
        ],
        ids=[
            "missing-scenario_id",
            "missing-text",
            "no-token",
            "wrong-token",
            "unknown-conv_id",
            "unknown-scenario",
            "token-of-another-scenario",
            "long-context",
            "six-metadata-keys",
            "legacy-empty-text",
            "legacy-missing-scenario_id",
            "legacy-unknown-conv_id",
            "legacy-long-context",
            "legacy-wrong-key",
            "legacy-key-of-another-scenario",
            "legacy-six-metadata-keys",
        ],
    )
    async def test_documented_errors(  # noqa: PLR0917 -- pytest passes the parameters
        self, http: httpx.AsyncClient, service: EmulatorService, body, token, status, text
    ):
        """Every documented error goes out with its status and exact plain text."""
        response = await chat(http, body, token=token)

        assert (response.status_code, response.text) == (status, text)
        assert response.headers["content-type"].startswith("text/plain")
        assert service.conversations() == ()

    @pytest.mark.parametrize(
        ("body", "text"),
        [
            (b"", ErrorText.INVALID_JSON),
            (b"{not json", ErrorText.INVALID_JSON),
            (b"\xff\xfe", ErrorText.INVALID_JSON),
            (b"[1, 2]", ErrorText.BODY_NOT_AN_OBJECT),
            (json.dumps(current(42)).encode(), "Parameter text must be a string"),
            (
                json.dumps(current("a", client_metadata=[])).encode(),
                "Parameter client_metadata must be an object",
            ),
        ],
        ids=["empty", "broken", "not-utf8", "list", "text-number", "metadata-list"],
    )
    async def test_malformed_requests(self, http: httpx.AsyncClient, body, text):
        """Malformed JSON and wrong types are a 400 saying what is wrong, never a 500."""
        response = await chat(http, body)

        assert (response.status_code, response.text) == (400, text)

    async def test_body_in_several_chunks(self, http: httpx.AsyncClient):
        """A streamed request body is read whole."""

        async def parts() -> AsyncIterator[bytes]:
            yield f'{{"scenario_id": "{SCENARIO_ID}", '.encode()
            yield b'"text": "Hi"}'

        response = await http.post("/chat", content=parts(), headers=AUTH)

        assert response.json()["ord_number"] == 3

    async def test_other_methods_and_paths(self, http: httpx.AsyncClient):
        """GET /chat is a 405, an unknown path a 404."""
        assert (await http.get("/chat")).status_code == 405
        assert (await http.post("/nope", json={})).status_code == 404

    async def test_dripped_reply(self, http: httpx.AsyncClient, service: EmulatorService):
        """A dripped reply arrives whole."""
        service.faults.script([Fault("drip", chunk_size=10, interval=0.001)])

        response = await chat(http, current())

        assert response.json()["ord_number"] == 3

    async def test_slow_headers(self, http: httpx.AsyncClient, service: EmulatorService):
        """slow_headers delays a normal reply."""
        service.faults.script([Fault("slow_headers", delay=0.01)])

        assert (await chat(http, current())).json()["ord_number"] == 3

    @pytest.mark.parametrize("kind", ["drop_before", "truncated", "reset_mid_body"])
    async def test_socket_faults_need_uvicorn(
        self, http: httpx.AsyncClient, service: EmulatorService, kind
    ):
        """Under a server that does not expose its transport, a connection fault is an error."""
        service.faults.script([kind])

        with pytest.raises(RuntimeError, match="needs uvicorn's transport"):
            await chat(http, current())


class TestEmulatorRoutes:
    async def test_conversations(self, http: httpx.AsyncClient):
        """GET /_emulator/conversations lists every conversation with its messages."""
        conv_id = (await chat(http, current("Hi", client_metadata={"kb_topic": "billing"}))).json()[
            "conv_id"
        ]

        data = (await http.get("/_emulator/conversations")).json()

        [conversation] = data["conversations"]
        assert conversation["conv_id"] == conv_id
        assert conversation["scenario_id"] == SCENARIO_ID
        user = conversation["messages"][1]
        assert (user["role"], user["text"]) == ("user", "Hi")
        assert user["client_metadata"] == {"kb_topic": "billing"}

    async def test_one_conversation(self, http: httpx.AsyncClient, service: EmulatorService):
        """GET /_emulator/conversations/{conv_id} is that conversation's export."""
        conv_id = (await chat(http, current("Hi"))).json()["conv_id"]

        response = await http.get(f"/_emulator/conversations/{conv_id}")

        assert response.json() == service.conversation(conv_id).to_dict()
        assert [m["ord_number"] for m in response.json()["messages"]] == [1, 2, 3]

    async def test_unknown_conversation(self, http: httpx.AsyncClient):
        """An unknown conv_id is a 404 naming it."""
        response = await http.get("/_emulator/conversations/nope")

        assert (response.status_code, response.text) == (404, "No conversation nope")

    async def test_stats(self, http: httpx.AsyncClient):
        """GET /_emulator/stats counts requests by outcome and status."""
        await chat(http, current())
        await chat(http, current(scenario_id="nope"))

        stats = (await http.get("/_emulator/stats")).json()

        assert stats["requests"] == 2
        assert (stats["replied"], stats["rejected"]) == (1, 1)
        assert stats["by_status"] == {"200": 1, "404": 1}

    async def test_faults(self, http: httpx.AsyncClient, service: EmulatorService):
        """POST /_emulator/faults scripts faults; GET shows what is pending."""
        command = {"script": ["rate_limit", None], "rates": {"error_before": 0.5}, "seed": 3}

        posted = await http.post("/_emulator/faults", json=command)
        shown = await http.get("/_emulator/faults")

        assert posted.json() == shown.json() == service.faults.to_dict()
        assert [f and f["kind"] for f in shown.json()["pending"]] == ["rate_limit", None]
        assert (await chat(http, current())).status_code == 429

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"{oops", "Bad faults command: "),
            (b'{"script": ["boom"]}', "Bad faults command: Unknown fault kind 'boom'"),
            (b'{"what": 1}', "Bad faults command: Unknown faults command field(s): what."),
        ],
    )
    async def test_bad_faults_command(
        self, http: httpx.AsyncClient, service: EmulatorService, content, message
    ):
        """A malformed faults command is a 400 and changes nothing."""
        response = await http.post("/_emulator/faults", content=content)

        assert response.status_code == 400
        assert response.text.startswith(message)
        assert service.faults.pending == ()

    async def test_reset(self, http: httpx.AsyncClient, service: EmulatorService):
        """POST /_emulator/reset forgets conversations, counters and scripted faults."""
        await chat(http, current())
        service.faults.script(["drip"])

        response = await http.post("/_emulator/reset")

        assert response.json() == {"reset": True}
        assert service.conversations() == ()
        assert service.stats().requests == 0
        assert service.faults.pending == ()

    async def test_routes_are_read_only_by_method(self, http: httpx.AsyncClient):
        """The record cannot be changed through GET /_emulator/reset."""
        assert (await http.get("/_emulator/reset")).status_code == 405


# --- the app under a fake ASGI server that exposes its transport ---------------------------------


class FakeTransport:
    """Stands in for uvicorn's asyncio transport: records how the connection was ended."""

    def __init__(self, sock: object = None) -> None:
        self.sock = sock
        self.ended = anyio.Event()
        self.how: str | None = None

    def is_closing(self) -> bool:
        return self.how is not None

    def close(self) -> None:
        self.how = "close"
        self.ended.set()

    def abort(self) -> None:
        self.how = "abort"
        self.ended.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


class FakeCycle:
    """Stands in for uvicorn's request cycle, whose bound `send` the app inspects."""

    def __init__(self, transport: FakeTransport, request_body: bytes) -> None:
        self.transport = transport
        self.sent: list[Message] = []
        self._incoming = [
            {"type": "http.request", "body": request_body[:5], "more_body": True},
            {"type": "http.request", "body": request_body[5:], "more_body": False},
        ]

    async def receive(self) -> Message:
        if self._incoming:
            return self._incoming.pop(0)
        await self.transport.ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def http_scope(path: str = "/chat") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


class TestConnectionActions:
    async def run(self, service: EmulatorService, transport: FakeTransport) -> FakeCycle:
        cycle = FakeCycle(transport, json.dumps(current("Hi")).encode())
        with anyio.fail_after(5):
            await create_app(service)(http_scope(), cycle.receive, cycle.send)
        return cycle

    async def test_drop_closes_without_a_response(self, service: EmulatorService):
        """drop_before closes the connection (FIN) and sends nothing."""
        service.faults.script(["drop_before"])
        transport = FakeTransport()

        cycle = await self.run(service, transport)

        assert transport.how == "close"
        assert cycle.sent == []

    @pytest.mark.parametrize(("kind", "how"), [("truncated", "close"), ("reset_mid_body", "abort")])
    async def test_cut_bodies(self, service: EmulatorService, kind, how):
        """truncated and reset_mid_body send the headers and half the body, then cut."""
        service.faults.script([Fault(kind, interval=0.0)])
        transport = FakeTransport()

        cycle = await self.run(service, transport)

        assert transport.how == how
        start, body = cycle.sent
        assert start["status"] == 200
        length = int(dict(start["headers"])[b"content-length"])
        assert (len(body["body"]), body["more_body"]) == (length // 2, True)

    async def test_reset_sets_linger_zero(self, service: EmulatorService):
        """A reset sets SO_LINGER to 0 on the socket, so that closing sends an RST."""
        service.faults.script([Fault("reset_mid_body", interval=0.0)])
        options: list[tuple[int, int, bytes]] = []

        class Socket:
            def setsockopt(self, level: int, name: int, value: bytes) -> None:
                options.append((level, name, value))

        await self.run(service, FakeTransport(Socket()))

        assert len(options) == 1

    async def test_reset_of_a_socket_closed_meanwhile(self, service: EmulatorService):
        """The client's leaving closed the socket first (EBADF): the connection is aborted."""
        service.faults.script([Fault("reset_mid_body", interval=0.0)])

        class Closed:
            def setsockopt(self, level: int, name: int, value: bytes) -> None:
                raise OSError(errno.EBADF, "Bad file descriptor")

        transport = FakeTransport(Closed())
        await self.run(service, transport)

        assert transport.how == "abort"

    async def test_client_gone_before_the_body(self, service: EmulatorService):
        """A client that disconnects while sending its body is not answered."""
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)  # pragma: no cover -- must not happen

        await create_app(service)(http_scope(), receive, send)

        assert sent == []
        assert service.stats().requests == 0


# --- the app served by uvicorn, on a loopback socket ---------------------------------------------


@pytest.fixture(name="served", scope="module")
def _served() -> Iterator[ServerHandle]:
    """One uvicorn server for this module's socket tests."""
    with serve(make_service()) as server:
        yield server


@pytest.fixture(name="server")
def _server(served: ServerHandle) -> ServerHandle:
    served.service.reset()
    return served


async def post_served(server: ServerHandle, **options: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, **options) as http:
        return await http.post("/chat", json=current(), headers=AUTH)


class TestServed:
    async def test_reply(self, server: ServerHandle):
        """Over a real socket, a request gets its reply."""
        response = await post_served(server)

        assert response.status_code == 200
        assert server.service.user_messages(response.json()["conv_id"]) == ("Hello!",)

    @pytest.mark.parametrize("kind", ["drop_before", "drop_after"])
    async def test_drop(self, server: ServerHandle, kind):
        """A drop closes the connection before any response."""
        server.service.faults.script([kind])

        with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
            await post_served(server)
        assert server.service.stats().turns == (1 if kind == "drop_after" else 0)

    async def test_truncated(self, server: ServerHandle):
        """A truncated body ends with a clean close the client notices as incomplete."""
        server.service.faults.script(["truncated"])

        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await post_served(server)

    async def test_reset_mid_body(self, server: ServerHandle):
        """A reset mid-body is a read error on the client."""
        server.service.faults.script(["reset_mid_body"])

        with pytest.raises(httpx.ReadError):
            await post_served(server)

    async def test_drip(self, server: ServerHandle):
        """A dripped body arrives whole over the socket."""
        server.service.faults.script([Fault("drip", chunk_size=32, interval=0.001)])

        assert (await post_served(server)).json()["ord_number"] == 3

    async def test_huge_body(self, server: ServerHandle):
        """A huge body arrives at the size asked for."""
        server.service.faults.script([Fault("huge_body", size=200_000)])

        response = await post_served(server)

        assert len(response.content) == 200_000

    async def test_slow_headers_client_gives_up(self, server: ServerHandle):
        """A client that stops waiting for slow headers gets a timeout; the server carries on."""
        server.service.faults.script([Fault("slow_headers", delay=30.0)])

        with pytest.raises(httpx.ReadTimeout):
            await post_served(server, timeout=httpx.Timeout(5.0, read=0.2))
        assert (await post_served(server)).status_code == 200

    async def test_endless_times_out(self, server: ServerHandle):
        """An endless body with slow filler ends in a read timeout."""
        server.service.faults.script([Fault("endless", interval=30.0)])

        with pytest.raises(httpx.ReadTimeout):
            await post_served(server, timeout=httpx.Timeout(5.0, read=0.2))

    # asyncio only: stopping early on trio leaves httpx's async generators to the garbage
    # collector, which trio reports as a ResourceWarning (encode/httpx#3686).
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_endless_until_the_client_leaves(self, server: ServerHandle):
        """An endless body keeps coming, chunked, until the client closes the connection."""
        server.service.faults.script([Fault("endless", chunk_size=1024, interval=0.001)])
        received = 0

        async with (
            httpx.AsyncClient(base_url=server.base_url) as http,
            http.stream("POST", "/chat", json=current(), headers=AUTH) as response,
        ):
            assert response.headers["transfer-encoding"] == "chunked"
            async with contextlib.aclosing(response.aiter_raw()) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    received += len(chunk)
                    if received > 10_000:
                        break

        assert received > 10_000
        assert (await post_served(server)).status_code == 200

    async def test_emulator_routes(self, server: ServerHandle):
        """The /_emulator routes answer over the socket too."""
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            await http.post("/_emulator/faults", json={"script": ["unavailable"]})
            unavailable = await http.post("/chat", json=current(), headers=AUTH)
            stats = (await http.get("/_emulator/stats")).json()

        assert unavailable.status_code == 503
        assert unavailable.headers["retry-after"] == "1"
        assert stats["by_fault"] == {"unavailable": 1}
