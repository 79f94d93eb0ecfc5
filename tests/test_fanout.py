"""Fan-out: many conversations at once, each job's result on its own, rates respected.

Jobs talk to the project's emulator, in process (the shared `emulator` fixture).
"""

from __future__ import annotations

import anyio
import pytest

from quickchat_async import (
    FanOut,
    FanOutResult,
    RateLimiter,
    ScenarioNotFoundError,
    Script,
    ValidationError,
)


pytestmark = pytest.mark.anyio


class TestResults:
    async def test_every_kind_of_job(self, emulator):
        """Scripts, lists of texts and coroutines each run in their own conversation."""

        async def job(conv):
            await conv.say("Hi")
            return conv.conv_id

        jobs = [
            ["Hello", "How do refunds work?"],
            Script(["Hi"], kb_topic="billing", metadata={"user": "u-1"}),  # turns positional
            job,
            "One turn",
        ]
        async with emulator.client() as client:
            results = await client.fan_out(jobs, concurrency=2)

        assert [result.index for result in results] == [0, 1, 2, 3]
        assert all(result.ok for result in results)
        assert len(results[0].replies) == 2
        assert results[0].value == results[0].replies
        assert results[2].value == results[2].conversation.conv_id
        assert emulator.user_messages(results[3].conversation.conv_id) == ("One turn",)
        sent = emulator.messages(results[1].conversation.conv_id)[1]
        assert sent.client_metadata == {"user": "u-1", "kb_topic": "billing"}
        assert len({result.conversation.conv_id for result in results}) == 4

    async def test_failures_stay_with_their_job(self, emulator):
        """A failing job reports its typed error; the others finish normally."""

        async def broken(conv):
            await conv.say("Hi")
            raise KeyError("the user's own bug")

        too_much = Script(turns=["a"], metadata={str(n): n for n in range(6)})
        jobs = [["fine"], broken, too_much, 42, ["also fine"]]
        async with emulator.client() as client:
            results = await client.fan_out(jobs)

        assert [result.ok for result in results] == [True, False, False, False, True]
        assert isinstance(results[1].error, KeyError)
        assert results[1].conversation.conv_id is not None  # it got that far
        assert isinstance(results[2].error, ValidationError)
        assert isinstance(results[3].error, ValidationError)
        assert "not int" in str(results[3].error)
        assert "ValidationError" in repr(results[3])

    async def test_server_errors_are_results(self, emulator):
        """An API error ends its job with that error and the replies received before it."""
        async with emulator.client(scenario_id="no-such-agent") as client:
            results = await client.fan_out([["Hi"], ["Hello"]])

        assert all(isinstance(result.error, ScenarioNotFoundError) for result in results)
        assert all(result.replies == () for result in results)

    async def test_on_result_sync_and_async(self, emulator):
        """on_result sees every result once, as a plain or an async function."""
        seen: list[int] = []

        async def record(result: FanOutResult) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(result.index)

        async with emulator.client() as client:
            await client.fan_out([["a"]] * 5, on_result=record)
            await client.fan_out([["a"]] * 3, on_result=lambda r: seen.append(r.index + 10))

        assert sorted(seen) == [0, 1, 2, 3, 4, 10, 11, 12]

    async def test_concurrency_is_bounded_and_jobs_taken_lazily(self, emulator):
        """At most `concurrency` jobs run at once; a generator of jobs is read as they free up."""
        running = peak = finished = ahead = 0

        async def job(conv):
            nonlocal running, peak, finished
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.01)
            running -= 1
            finished += 1

        def jobs():
            nonlocal ahead
            for taken in range(12):
                ahead = max(ahead, taken - finished)
                yield job

        async with emulator.client() as client:
            results = await client.fan_out(jobs(), concurrency=3)

        assert len(results) == 12
        assert peak == 3
        assert ahead <= 3


class TestStream:
    async def test_results_arrive_as_jobs_finish(self, emulator):
        """The stream yields a quick job's result before a slow one's."""
        release = anyio.Event()

        async def slow(conv):
            await release.wait()
            return "slow"

        async def quick(conv):
            return "quick"

        order = []
        async with emulator.client() as client:
            fan_out = client.fan_out_stream([slow, quick], concurrency=2)
            assert repr(fan_out).startswith("<FanOut concurrency=2")
            async with fan_out as results:
                async for result in results:
                    order.append(result.value)
                    release.set()

        assert order == ["quick", "slow"]

    async def test_leaving_early_cancels_the_rest(self, emulator):
        """Breaking out of the stream cancels the jobs still running."""
        cancelled = 0

        async def stuck(conv):
            nonlocal cancelled
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled += 1
                raise

        async def quick(conv):
            return 1

        async with (
            emulator.client() as client,
            client.fan_out_stream([stuck, stuck, quick], concurrency=3) as results,
        ):
            async for _ in results:
                break

        assert cancelled == 2

    async def test_runs_once_and_only_inside_the_block(self, emulator):
        """A FanOut is entered once, and iterated inside its block."""
        async with emulator.client() as client:
            fan_out = FanOut(client, [])
            with pytest.raises(RuntimeError, match="inside"):
                async for _ in fan_out:
                    pass  # pragma: no cover
            async with fan_out:
                pass
            with pytest.raises(RuntimeError, match="runs once"):
                await fan_out.__aenter__()


class TestRateLimits:
    async def test_every_request_waits_on_the_limiter(self, emulator):
        """Each request, retries and coroutine jobs included, takes one token."""

        class Counting(RateLimiter):
            __slots__ = ("count",)

            async def acquire(self) -> None:
                self.count += 1
                await super().acquire()

        limiter = Counting(per_second=10_000)
        limiter.count = 0

        async def job(conv):
            await conv.say("a")
            await conv.say("b")

        emulator.faults.script(["rate_limit"])  # one retry
        async with emulator.client() as client:
            results = await client.fan_out([job, ["c"]], rate_limiter=limiter, concurrency=1)
            await client.say("outside the fan-out: not limited")

        assert all(result.ok for result in results)
        assert limiter.count == 4

    async def test_rates_build_a_limiter(self, emulator):
        """rate_per_second and rate_per_minute both apply."""
        async with emulator.client() as client:
            fan_out = client.fan_out_stream([], rate_per_second=5, rate_per_minute=120)

        assert "per_second=5 per_minute=120" in repr(fan_out)

    @pytest.mark.parametrize(
        "options",
        [
            {"concurrency": 0},
            {"rate_per_second": 0},
            {"rate_per_minute": float("inf")},
            {"rate_per_second": True},
            {"rate_per_second": 1, "rate_limiter": RateLimiter(per_second=1)},
        ],
    )
    async def test_bad_options(self, emulator, options):
        """Bad concurrency or rates are refused before anything runs."""
        async with emulator.client() as client:
            with pytest.raises(ValidationError):
                await client.fan_out([["a"]], **options)
