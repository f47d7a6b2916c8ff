"""The live view: only ready, fresh, non-draining workers are offered."""

from __future__ import annotations

import dataclasses

from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore


def view_of(tmp_path, records, now=1000.0) -> LiveView:
    store = LocalLeaseStore(tmp_path, sweep_after=None)
    for record in records:
        store.publish(record)
    return LiveView(store, clock=lambda: now)


def test_workers_and_models_come_from_live_records_only(tmp_path, make_record):
    view = view_of(
        tmp_path,
        [
            make_record("a", models=("chat", "chat-alias"), renew_time=999.0),
            make_record("b", models=("chat",), renew_time=999.0),
            make_record("c", models=("code",), renew_time=999.0, draining=True),
            make_record("d", models=("math",), renew_time=999.0, ready=False),
            make_record("e", models=("old",), renew_time=900.0),
        ],
    )
    assert [w.name for w in view.workers()] == ["a", "b"]
    assert [w.name for w in view.workers("chat")] == ["a", "b"]
    assert [w.name for w in view.workers("chat-alias")] == ["a"]
    assert view.workers("code") == [] and view.workers("unknown") == []
    assert view.models() == ["chat", "chat-alias"]


def test_all_workers_explains_who_is_not_live(tmp_path, make_record):
    view = view_of(
        tmp_path,
        [
            make_record("a", renew_time=999.0),
            make_record("b", renew_time=999.0, draining=True),
            make_record("c", renew_time=990.0),
        ],
    )
    statuses = {s.record.name: s for s in view.all_workers()}
    assert (statuses["a"].live, statuses["a"].reason) == (True, "live")
    assert (statuses["b"].live, statuses["b"].reason) == (False, "draining")
    assert statuses["c"].reason.startswith("heartbeat lost")
    assert statuses["c"].heartbeat_age == 10.0


def test_expiry_is_judged_at_read_time(tmp_path, make_record):
    now = [1000.0]
    store = LocalLeaseStore(tmp_path, sweep_after=None)
    store.publish(make_record("a", renew_time=1000.0, lease_duration=6.0))
    view = LiveView(store, clock=lambda: now[0])
    assert view.models() == ["chat"]
    now[0] = 1007.0
    assert view.models() == [] and view.workers() == []


async def test_start_and_stop_reach_a_watching_source(make_record):
    class Watching:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def snapshot(self):
            return []

        async def start(self) -> None:
            self.calls.append("start")

        async def stop(self) -> None:
            self.calls.append("stop")

    source = Watching()
    view = LiveView(source)
    await view.start()
    await view.stop()
    assert source.calls == ["start", "stop"]
    await LiveView(LocalLeaseStore("/nonexistent")).start()  # no start(): nothing to do


def test_lost_names_workers_whose_lease_lapsed_vanished_or_moved(tmp_path, make_record):
    now = [1000.0]
    store = LocalLeaseStore(tmp_path, sweep_after=None)
    held = {
        name: make_record(name, renew_time=999.0)
        for name in ("fresh", "draining", "loading", "expires", "vanishes", "moves")
    }
    for r in held.values():
        store.publish(r)
    store.publish(dataclasses.replace(held["draining"], draining=True))
    store.publish(dataclasses.replace(held["loading"], ready=False))
    view = LiveView(store, clock=lambda: now[0])
    assert view.lost(held.values()) == set()
    store.publish(dataclasses.replace(held["expires"], renew_time=990.0))  # 10 s old, lease 6 s
    store.remove("vanishes")
    store.publish(dataclasses.replace(held["moves"], address="http://127.0.0.1:9999"))
    assert view.lost(held.values()) == {"expires", "vanishes", "moves"}
    now[0] = 1010.0
    assert view.lost(held.values()) == set(held)


def test_known_models_outlive_their_records(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path, sweep_after=None)
    store.publish(make_record("a", models=("chat", "chat-alias")))
    store.publish(make_record("b", models=("code",), ready=False))
    view = LiveView(store)
    assert view.models() == ["chat", "chat-alias"]
    store.remove("a")
    store.remove("b")
    assert view.models() == []
    assert view.known_models() == ["chat", "chat-alias", "code"]
    assert LiveView(store).known_models() == []  # what a view never read, it does not know
