"""The heartbeat task: beats on a schedule, drains at once, removes on stop, survives failures."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from kubechat.discovery.heartbeat import Heartbeat
from kubechat.discovery.local_store import LocalLeaseStore
from tests.support.processes import until_async


class FlakyStore(LocalLeaseStore):
    """A local store whose first ``failures`` publishes raise, as an unreachable API would."""

    def __init__(self, path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.attempts = 0

    def publish(self, record) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("API server unreachable")
        super().publish(record)


async def test_publishes_now_and_then_every_interval(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path)
    load = {"in_flight": 0}
    beat = Heartbeat(store, lambda: make_record("w0", **load), interval=0.05, lease_duration=0.5)
    beat.start()
    try:
        await until_async(lambda: store.snapshot())
        first = store.snapshot()[0]
        assert first.lease_duration == 0.5  # the heartbeat owns the timing fields
        load["in_flight"] = 4
        await until_async(lambda: store.snapshot()[0].in_flight == 4)
        assert store.snapshot()[0].renew_time > first.renew_time
        assert store.snapshot()[0].is_live(time.time())
    finally:
        await beat.stop()


async def test_mark_draining_publishes_at_once_and_stays_draining(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path)
    beat = Heartbeat(store, lambda: make_record("w0"), interval=30.0, lease_duration=60.0)
    beat.start()
    await until_async(lambda: store.snapshot())
    await beat.mark_draining()  # the next scheduled beat is 30 s away: this one is immediate
    (record,) = store.snapshot()
    assert record.draining and not record.is_live(time.time())
    assert await beat.publish_now()
    assert store.snapshot()[0].draining
    await beat.stop()


async def test_stop_removes_the_record_and_ends_the_task(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path)
    beat = Heartbeat(store, lambda: make_record("w0"), interval=0.02, lease_duration=1.0)
    beat.start()
    await until_async(lambda: store.snapshot())
    await beat.stop()
    assert store.snapshot() == []
    await asyncio.sleep(0.1)  # no beat after stop brings it back
    assert store.snapshot() == []
    await beat.stop()  # twice is fine


async def test_publish_failures_are_logged_and_retried(tmp_path, make_record, caplog):
    store = FlakyStore(tmp_path, failures=3)
    beat = Heartbeat(store, lambda: make_record("w0"), interval=0.02, lease_duration=1.0)
    with caplog.at_level(logging.INFO, logger="kubechat.discovery.heartbeat"):
        beat.start()
        await until_async(lambda: store.snapshot())
        await beat.stop()
    assert store.attempts >= 4 and beat.failures == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1  # warned once, not on every beat
    assert any("works again" in m for m in messages)


async def test_a_failing_record_maker_does_not_kill_the_task(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path)
    calls = {"n": 0}

    def make():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine stats not ready")
        return make_record("w0")

    beat = Heartbeat(store, make, interval=0.02, lease_duration=1.0)
    beat.start()
    await until_async(lambda: store.snapshot())
    await beat.stop()


async def test_async_writers_are_awaited(make_record):
    class AsyncWriter:
        def __init__(self) -> None:
            self.records: dict[str, object] = {}

        async def publish(self, record) -> None:
            self.records[record.name] = record

        async def remove(self, name: str) -> None:
            self.records.pop(name, None)

    writer = AsyncWriter()
    beat = Heartbeat(writer, lambda: make_record("w0"), interval=0.02, lease_duration=1.0)
    beat.start()
    await until_async(lambda: "w0" in writer.records)
    await beat.stop()
    assert writer.records == {}


def test_lease_must_outlast_the_interval(tmp_path, make_record):
    with pytest.raises(ValueError):
        Heartbeat(LocalLeaseStore(tmp_path), make_record, interval=2.0, lease_duration=2.0)
