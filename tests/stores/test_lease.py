"""Holding a shared lease: renewal, loss and release failures, at the `Lease` seam."""

from __future__ import annotations

import logging

import anyio
import pytest

from quickchat_async import StoreError, StoreLockTimeoutError
from quickchat_async._stores._base import KeyedLocks, hold_lease


pytestmark = pytest.mark.anyio


class FakeLease:
    """A lease whose answers the test sets, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.free = True
        self.renewals: list[bool | StoreError] = []
        self.release_error: StoreError | None = None

    async def try_acquire(self, user_key: str, token: str, ttl: float) -> float | None:
        self.calls.append(("acquire", token))
        return None if self.free else 0.05

    async def renew(self, user_key: str, token: str, ttl: float) -> bool:
        self.calls.append(("renew", token))
        outcome = self.renewals.pop(0) if self.renewals else True
        if isinstance(outcome, StoreError):
            raise outcome
        return outcome

    async def release(self, user_key: str, token: str) -> None:
        self.calls.append(("release", token))
        if self.release_error is not None:
            raise self.release_error


@pytest.fixture(name="lease")
def _lease() -> FakeLease:
    return FakeLease()


@pytest.fixture(autouse=True)
def _warnings(caplog):
    caplog.set_level(logging.WARNING, logger="quickchat_async.stores")


async def test_release_failure_is_logged(lease, caplog):
    """A release that fails is logged; the lock expires by itself and the turn's result stands."""
    lease.release_error = StoreError("connection reset")

    async with hold_lease(lease, KeyedLocks(), "user-1", ttl=30, timeout=5):
        pass

    assert "Could not release the lock on user key 'user-1'" in caplog.text


async def test_failed_renewal_is_retried(lease, caplog):
    """A renewal that fails is logged and tried again at the next tick."""
    lease.renewals = [StoreError("timeout"), True]

    async with hold_lease(lease, KeyedLocks(), "user-1", ttl=0.15, timeout=5):
        await anyio.sleep(0.4)

    assert [name for name, _ in lease.calls].count("renew") >= 2
    assert "Could not renew the lock on user key 'user-1'" in caplog.text


async def test_lost_lease_is_logged(lease, caplog):
    """A lease found taken over mid-turn is logged and no longer renewed; the turn goes on."""
    lease.renewals = [False]

    async with hold_lease(lease, KeyedLocks(), "user-1", ttl=0.15, timeout=5):
        await anyio.sleep(0.4)

    assert [name for name, _ in lease.calls].count("renew") == 1
    assert "expired before its turn ended" in caplog.text


async def test_timeout_still_releases(lease):
    """After a timed-out wait the token is released too: the backend may just have granted it."""
    lease.free = False

    with pytest.raises(StoreLockTimeoutError):
        async with hold_lease(lease, KeyedLocks(), "user-1", ttl=30, timeout=0.2):
            pytest.fail("the lease was never free")

    tokens = {token for _, token in lease.calls}
    assert len(tokens) == 1
    assert lease.calls[-1][0] == "release"
