"""The benchmark's server: fixed JSON replies on 127.0.0.1, chosen by path.

nginx (Debian's ``nginx-light``) when installed, else a small asyncio server in another process.
Each SDK gets a small reply in its own API's shape, which it parses in full:

- ``POST /chat``: a Quickchat chat reply (ours);
- ``POST /v1/chat/completions``: an OpenAI chat completion (``openai.AsyncOpenAI``);
- ``POST /v1/messages``: an Anthropic message (``anthropic.AsyncAnthropic``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path


ASSISTANT_TEXT = "Hi there! How can I help you today?"

QUICKCHAT_REPLY = {"conv_id": "bench-conv", "reply": ASSISTANT_TEXT, "ord_number": 3, "src": 0}

OPENAI_REPLY = {
    "id": "chatcmpl-BenchB9MBs8CjcvOU2jLn4n570S5q",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": ASSISTANT_TEXT,
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 10,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": None,
}

ANTHROPIC_REPLY = {
    "id": "msg_bench013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "bench-model",
    "content": [{"type": "text", "text": ASSISTANT_TEXT}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 12,
        "service_tier": "standard",
    },
}

#: The reply body for each path, as the server sends it.
REPLIES = {
    path: json.dumps(reply, separators=(",", ":"))
    for path, reply in {
        "/chat": QUICKCHAT_REPLY,
        "/v1/chat/completions": OPENAI_REPLY,
        "/v1/messages": ANTHROPIC_REPLY,
    }.items()
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("the server did not start")


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""

NGINX_LOCATION = "        location = {path} {{ return 200 '{body}'; }}"

FALLBACK_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys

    def response(status, body):
        return (b"HTTP/1.1 " + status + b"\\r\\nContent-Type: application/json\\r\\n"
                b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)

    RESPONSES = {path.encode(): response(b"200 OK", body.encode())
                 for path, body in json.loads(sys.argv[2]).items()}
    NOT_FOUND = response(b"404 Not Found", b"{}")

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""
        def data_received(self, data):
            self.buffer += data
            while True:
                head, sep, rest = self.buffer.partition(b"\\r\\n\\r\\n")
                if not sep:
                    return
                lines = head.split(b"\\r\\n")
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if len(rest) < length:
                    return
                self.buffer = rest[length:]
                path = lines[0].split(b" ")[1].partition(b"?")[0]
                self.transport.write(RESPONSES.get(path, NOT_FOUND))

    async def main():
        server = await asyncio.get_running_loop().create_server(
            Server, "127.0.0.1", int(sys.argv[1]))
        await server.serve_forever()

    asyncio.run(main())
    """
)


def nginx_path() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@contextlib.contextmanager
def reply_server(*, force_fallback: bool = False) -> Iterator[tuple[str, str]]:
    """Serve `REPLIES` on 127.0.0.1; yields (base URL, server name)."""
    port = free_port()
    nginx = nginx_path()
    with tempfile.TemporaryDirectory() as tmp:
        if nginx and not force_fallback:
            locations = "\n".join(
                NGINX_LOCATION.format(path=path, body=body) for path, body in REPLIES.items()
            )
            conf = Path(tmp, "nginx.conf")
            conf.write_text(NGINX_CONF.format(dir=tmp, port=port, locations=locations))
            command = [nginx, "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"]
            name = subprocess.run(  # noqa: S603 -- nginx found on PATH
                [nginx, "-v"], capture_output=True, text=True, check=False
            ).stderr.strip()
        else:
            command = [sys.executable, "-c", FALLBACK_SERVER, str(port), json.dumps(REPLIES)]
            name = "fallback asyncio server" + ("" if force_fallback else " (nginx not found)")
        proc = subprocess.Popen(  # noqa: S603 -- our own command line
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(port, proc)
            yield f"http://127.0.0.1:{port}", name
        finally:
            proc.terminate()
            proc.wait(10)
