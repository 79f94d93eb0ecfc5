"""The rows of the fan-out table: one function per client, each sending `total` requests with
`in_flight` at once, and returning the name of the HTTP engine it ran on.

Raw clients send our JSON body with `post(json=...)` and decode the reply; the SDK goes through
`client.fan_out()` over `in_flight` conversations that keep their whole history; openai's and
anthropic's SDKs each send one user message per call (no history: the least work their APIs
allow) to their own path, and parse their reply into their own models.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import anthropic
import httpx
import httpx2
import openai
import requests

from quickchat_async import AsyncQuickchat, Script


TOKEN = "bench-token"  # noqa: S105 -- nginx ignores it
SCENARIO_ID = "bench-scenario"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
BODY = {"scenario_id": SCENARIO_ID, "conv_id": "bench-conv", "text": "Hello!"}
MESSAGES: list[Any] = [{"role": "user", "content": "Hello!"}]

#: A row: (base URL, requests, in flight) -> the engine it ran on.
Row = Callable[[str, int, int], "Awaitable[str] | str"]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


async def workers(total: int, in_flight: int, work: Callable[[int], Awaitable[None]]) -> None:
    """Run `work(n)` in `in_flight` tasks that share `total` requests."""
    await asyncio.gather(*(work(n) for n in split(total, in_flight)))


# --- raw clients ------------------------------------------------------------------------------


async def raw_httpx2(url: str, total: int, in_flight: int) -> str:
    limits = httpx2.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx2.AsyncClient(limits=limits) as client:

        async def work(n: int) -> None:
            for _ in range(n):
                response = await client.post(f"{url}/chat", json=BODY, headers=HEADERS)
                assert response.status_code == 200  # the SDK checks the status too
                assert response.json()["reply"]

        await workers(total, in_flight, work)
    return f"httpx2 {httpx2.__version__}"


async def raw_httpx(url: str, total: int, in_flight: int) -> str:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits) as client:

        async def work(n: int) -> None:
            for _ in range(n):
                response = await client.post(f"{url}/chat", json=BODY, headers=HEADERS)
                assert response.status_code == 200
                assert response.json()["reply"]

        await workers(total, in_flight, work)
    return f"httpx {httpx.__version__}"


async def raw_aiohttp(url: str, total: int, in_flight: int) -> str:
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def work(n: int) -> None:
            for _ in range(n):
                async with session.post(f"{url}/chat", json=BODY, headers=HEADERS) as response:
                    assert response.status == 200
                    assert (await response.json())["reply"]

        await workers(total, in_flight, work)
    return f"aiohttp {aiohttp.__version__}"


def seed_requests(url: str, total: int, in_flight: int) -> str:
    """The seed documentation's snippet (`requests.post` per message), in a thread pool."""

    def one(_: int) -> None:
        response = requests.post(
            url=f"{url}/chat",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json=BODY,
            timeout=30,
        )
        assert response.status_code == 200
        assert response.json()["reply"]

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(total)))
    return f"requests {requests.__version__}, {in_flight} threads"


# --- the SDK ----------------------------------------------------------------------------------


def sdk_client(url: str, in_flight: int, **options: Any) -> AsyncQuickchat:
    """The SDK as a user builds it: nothing but the credentials, the server and the options."""
    return AsyncQuickchat(
        token=TOKEN, scenario_id=SCENARIO_ID, base_url=url, max_connections=in_flight, **options
    )


async def fan_out(client: AsyncQuickchat, total: int, in_flight: int) -> str:
    async with client:
        jobs = [Script(turns=["Hello!"] * n) for n in split(total, in_flight)]
        results = await client.fan_out(jobs, concurrency=in_flight)
    assert all(result.ok for result in results), [r.error for r in results if not r.ok][:1]
    assert sum(len(result.conversation.history) for result in results) == total
    return type(client.transport).__name__


async def sdk_default(url: str, total: int, in_flight: int) -> str:
    return await fan_out(sdk_client(url, in_flight), total, in_flight)


async def sdk_httpx(url: str, total: int, in_flight: int) -> str:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits) as http_client:
        client = sdk_client(url, in_flight, http_client=http_client)
        engine = await fan_out(client, total, in_flight)
    return f"{engine} on httpx {httpx.__version__}"


async def sdk_aiohttp(url: str, total: int, in_flight: int) -> str:
    return await fan_out(sdk_client(url, in_flight, transport="aiohttp"), total, in_flight)


# --- openai's and anthropic's SDKs ------------------------------------------------------------


def engine_of(sdk: object) -> str:
    """The HTTP client class a peer SDK runs on, and its transport when it is not the default."""
    http_client = getattr(sdk, "_client", None)
    client_class = next(
        (
            f"{cls.__module__.partition('.')[0]}.{cls.__name__}"
            for cls in type(http_client).__mro__
            if cls.__module__.partition(".")[0] in {"httpx", "httpx2"}
        ),
        type(http_client).__name__,
    )
    transport = type(getattr(http_client, "_transport", None))
    if transport.__module__.partition(".")[0] in {"httpx", "httpx2"}:
        return client_class
    return f"{client_class} + {transport.__module__.partition('.')[0]}'s {transport.__name__}"


def openai_row(*, aiohttp_client: bool) -> Row:
    async def run(url: str, total: int, in_flight: int) -> str:
        options: dict[str, Any] = (
            {"http_client": openai.DefaultAioHttpClient()} if aiohttp_client else {}
        )
        async with openai.AsyncOpenAI(
            api_key=TOKEN, base_url=f"{url}/v1", max_retries=0, **options
        ) as client:

            async def work(n: int) -> None:
                for _ in range(n):
                    completion = await client.chat.completions.create(
                        model="bench-model", messages=MESSAGES
                    )
                    assert completion.choices[0].message.content

            await workers(total, in_flight, work)
            return engine_of(client)

    return run


def anthropic_row(*, aiohttp_client: bool) -> Row:
    async def run(url: str, total: int, in_flight: int) -> str:
        options: dict[str, Any] = (
            {"http_client": anthropic.DefaultAioHttpClient()} if aiohttp_client else {}
        )
        async with anthropic.AsyncAnthropic(
            api_key=TOKEN, base_url=url, max_retries=0, **options
        ) as client:

            async def work(n: int) -> None:
                for _ in range(n):
                    message = await client.messages.create(
                        model="bench-model", max_tokens=256, messages=MESSAGES
                    )
                    assert message.content[0].type == "text"
                    assert message.content[0].text

            await workers(total, in_flight, work)
            return engine_of(client)

    return run


#: Every row of the table, in the order it is printed.
ROWS: dict[str, Row] = {
    "raw httpx2": raw_httpx2,
    "raw httpx 0.28": raw_httpx,
    "raw aiohttp": raw_aiohttp,
    "SDK default": sdk_default,
    "SDK on httpx 0.28": sdk_httpx,
    "SDK on aiohttp": sdk_aiohttp,
    "openai default": openai_row(aiohttp_client=False),
    "openai on aiohttp": openai_row(aiohttp_client=True),
    "anthropic default": anthropic_row(aiohttp_client=False),
    "anthropic on aiohttp": anthropic_row(aiohttp_client=True),
    "requests (seed snippet)": seed_requests,
}


def measure(run: Row, url: str, total: int, in_flight: int) -> tuple[float, float, str]:
    """Requests per second, CPU seconds of this process (threads included), and the engine."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    if inspect.iscoroutinefunction(run):
        engine = asyncio.run(run(url, total, in_flight))
    else:
        engine = run(url, total, in_flight)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert isinstance(engine, str)
    return total / wall, cpu, engine
