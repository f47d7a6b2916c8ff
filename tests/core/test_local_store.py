"""The local lease store: files in a state folder, atomic writes, expiry, removal."""

from __future__ import annotations

import logging
import os
import threading

from kubechat.discovery.local_store import LocalLeaseStore
from kubechat.discovery.records import LeaseWriter, WorkerSource


def test_it_is_both_a_writer_and_a_source(tmp_path):
    store = LocalLeaseStore(tmp_path)
    assert isinstance(store, LeaseWriter) and isinstance(store, WorkerSource)


def test_publish_replace_and_remove(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path / "state")
    assert store.snapshot() == []  # no folder yet
    store.publish(make_record("w1", in_flight=1))
    store.publish(make_record("w0"))
    store.publish(make_record("w1", in_flight=5))
    records = store.snapshot()
    assert [(r.name, r.in_flight) for r in records] == [("w0", 0), ("w1", 5)]
    store.remove("w1")
    store.remove("w1")  # already gone: no error
    assert [r.name for r in store.snapshot()] == ["w0"]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["w0.json"]


def test_records_survive_a_new_store_on_the_same_folder(tmp_path, make_record):
    record = make_record("w0", models=("a", "b"), queued=2)
    LocalLeaseStore(tmp_path).publish(record)
    assert LocalLeaseStore(tmp_path).snapshot() == [record]


def test_garbage_and_half_written_files_are_skipped_with_a_warning(tmp_path, make_record, caplog):
    store = LocalLeaseStore(tmp_path)
    store.publish(make_record("good"))
    good = (tmp_path / "good.json").read_text()
    (tmp_path / "half.json").write_text(good[: len(good) // 2])
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="kubechat.discovery.local_store"):
        assert [r.name for r in store.snapshot()] == ["good"]
        assert [r.name for r in store.snapshot()] == ["good"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3  # once per broken file, not once per read
    assert any("half.json" in w for w in warned)


def test_a_reader_never_sees_a_partial_record(tmp_path, make_record):
    """Concurrent writers and readers: every read parses (no torn files, no warnings)."""
    writer, reader = LocalLeaseStore(tmp_path), LocalLeaseStore(tmp_path)
    big = tuple(f"model-{i}" for i in range(2000))  # a large file takes several writes
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer.publish(make_record("w0", models=big, in_flight=i % 7))
            i += 1

    writer.publish(make_record("w0", models=big))  # the record exists before reads start
    thread = threading.Thread(target=write)
    thread.start()
    seen = []
    try:
        for _ in range(300):
            seen += reader.snapshot()
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never found the record"
    assert all(r.models == big for r in seen)
    assert not reader._warned
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_stale_records_are_kept_but_not_fresh_then_swept(tmp_path, make_record):
    now = [1000.0]
    store = LocalLeaseStore(tmp_path, sweep_after=60.0, clock=lambda: now[0])
    store.publish(make_record("w0", renew_time=1000.0, lease_duration=6.0))
    now[0] = 1010.0
    (record,) = store.snapshot()
    assert not record.is_fresh(now[0])
    now[0] = 1067.0  # expired at 1006, swept 60 s later
    assert store.snapshot() == []
    assert not (tmp_path / "w0.json").exists()


def test_old_broken_files_are_swept_too(tmp_path):
    store = LocalLeaseStore(tmp_path, sweep_after=60.0)
    path = tmp_path / "junk.json"
    path.write_text("{")
    os.utime(path, (0, 0))
    assert store.snapshot() == []
    assert not path.exists()


def test_unsafe_names_are_refused(tmp_path, make_record):
    store = LocalLeaseStore(tmp_path)
    for name in ("../escape", ".hidden", "a/b", ""):
        try:
            store.publish(make_record(name))
        except ValueError:
            continue
        raise AssertionError(f"{name!r} was accepted")
    assert list(tmp_path.iterdir()) == []
