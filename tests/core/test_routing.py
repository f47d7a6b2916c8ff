"""The router: least in-flight among live workers, seeded random ties, exclusion, none live."""

from __future__ import annotations

import random
import threading
from collections import Counter

from kubechat.discovery.live import LiveView
from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.routing import Router


def router_over(tmp_path, records, seed: int = 0) -> Router:
    store = LocalLeaseStore(tmp_path)
    for record in records:
        store.publish(record)
    return Router(LiveView(store), rng=random.Random(seed))


def test_a_burst_spreads_over_workers_before_any_heartbeat(tmp_path, make_record):
    router = router_over(tmp_path, [make_record(n) for n in ("a", "b", "c")])
    held = [router.acquire("chat") for _ in range(6)]
    assert Counter(h.worker.name for h in held) == {"a": 2, "b": 2, "c": 2}
    assert router.in_flight() == {"a": 2, "b": 2, "c": 2}
    held[0].release()
    freed = held[0].worker.name
    assert router.pick("chat").name == freed  # the only one with 1 in flight
    for h in held:
        h.release()
    assert router.in_flight() == {}


def test_release_is_idempotent_and_context_managed(tmp_path, make_record):
    router = router_over(tmp_path, [make_record("a")])
    with router.acquire("chat") as held:
        assert router.in_flight() == {"a": 1}
        held.release()
        held.release()
        assert router.in_flight() == {}
    assert router.in_flight() == {}
    with router.track(router.pick("chat")):
        assert router.in_flight() == {"a": 1}
    assert router.in_flight() == {}


def test_ties_are_broken_at_random_with_the_given_seed(tmp_path, make_record):
    records = [make_record(n) for n in ("a", "b", "c", "d")]
    picks = [router_over(tmp_path, records, seed=s).pick("chat").name for s in range(40)]
    assert set(picks) == {"a", "b", "c", "d"}  # every tied worker gets chosen
    again = [router_over(tmp_path, records, seed=s).pick("chat").name for s in range(40)]
    assert picks == again  # the seed decides


def test_excluded_workers_are_skipped(tmp_path, make_record):
    router = router_over(tmp_path, [make_record("a"), make_record("b")])
    assert router.pick("chat", exclude={"a"}).name == "b"
    assert router.pick("chat", exclude={"a", "b"}) is None
    assert router.acquire("chat", exclude={"a", "b"}) is None
    # exclusion beats load: a busy worker is chosen when the idle one was already tried
    busy = router.track(router.pick("chat", exclude={"a"}))
    assert router.pick("chat", exclude={"a"}).name == "b"
    busy.release()


def test_only_live_workers_serving_the_model_are_chosen(tmp_path, make_record):
    router = router_over(
        tmp_path,
        [
            make_record("draining", draining=True),
            make_record("loading", ready=False),
            make_record("stale", renew_time=0.0),
            make_record("other", models=("code",)),
            make_record("good"),
        ],
    )
    assert {router.pick("chat").name for _ in range(20)} == {"good"}
    assert router.pick("code").name == "other"
    assert router.pick("nobody-serves-this") is None


def test_no_live_worker_gives_none(tmp_path):
    router = router_over(tmp_path, [])
    assert router.pick("chat") is None and router.acquire("chat") is None


def test_counting_is_thread_safe(tmp_path, make_record):
    router = router_over(tmp_path, [make_record("a"), make_record("b")])

    def work() -> None:
        for _ in range(200):
            router.acquire("chat").release()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.in_flight() == {}
