"""The shared transparency-log store's proof code against the protocol's reference Merkle functions, and
its group committer."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from safeharbor_common.translog import GroupCommitter, LogStoreError
from safeharbor_common.translog.store import _hex_proofs, _proofs
from safeharbor_protocol import merkle


def _tree(size: int) -> merkle.MemoryNodeStore:
    store = merkle.MemoryNodeStore()
    for i in range(size):
        store.append_data(i.to_bytes(4, "big"))
    return store


def _by_key(store: merkle.MemoryNodeStore, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The store's nodes as the proof code reads them: by (level, index)."""
    found = store.read_nodes([merkle.NodeID(*key) for key in keys])
    return {(node.level, node.index): value for node, value in found.items()}


@pytest.mark.parametrize("size", [*range(1, 70), 127, 128, 129, 1000])
def test_batched_proofs_equal_the_reference_and_verify(size: int) -> None:
    store = _tree(size)
    reads: list[int] = []

    def reader(keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        reads.append(len(keys))
        return _by_key(store, keys)

    indexes = list(range(size)) if size < 200 else list(range(0, size, 7))
    proofs = _proofs(indexes, size, reader)
    hex_proofs = _hex_proofs(indexes, size, reader)
    root = merkle.root(size, store.read_nodes)
    assert len(reads) == 2  # one node read for all the proofs (each)
    for index in indexes:
        assert proofs[index] == merkle.inclusion_proof(index, size, store.read_nodes)
        assert hex_proofs[index] == [h.hex() for h in proofs[index]]
        leaf = merkle.leaf_hash(index.to_bytes(4, "big"))
        merkle.verify_inclusion(leaf, index, size, proofs[index], root)


def test_a_leaf_outside_the_tree_is_refused() -> None:
    store = _tree(5)
    with pytest.raises(merkle.MerkleError):
        _proofs([5], 5, lambda keys: _by_key(store, keys))


def test_a_missing_node_is_a_store_error() -> None:
    store = _tree(5)
    with pytest.raises(LogStoreError):
        _proofs([0], 5, lambda keys: _by_key(store, [key for key in keys if key != (0, 1)]))


class _RecordingLock:
    """A commit lock that remembers which threads took it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.takers: list[str] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        if taken:
            self.takers.append(threading.current_thread().name)
        return taken

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def test_group_commit_answers_a_batch_without_the_commit_lock() -> None:
    """Only the caller that runs a batch takes the commit lock; the others of its batch are answered without
    it. (When each had to take the lock to learn it was done, it waited behind the next batch, which the
    lock's next holder was already running, and batches stayed small.)"""
    commit_lock = _RecordingLock()
    first_batch_running, release_first_batch = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def run_batch(items: list[str]) -> list[str | BaseException]:
        batches.append(items)
        if len(batches) == 1:
            first_batch_running.set()
            assert release_first_batch.wait(10)
        return [item.upper() for item in items]

    committer: GroupCommitter[str, str] = GroupCommitter(
        run_batch, lock=commit_lock, max_weight=10  # type: ignore[arg-type]
    )
    results: dict[str, str] = {}

    def wait_queued(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(committer._queue) < count:
            assert time.monotonic() < deadline
            time.sleep(0.001)

    threads = {
        item: threading.Thread(target=lambda item=item: results.update({item: committer.submit(item)}), name=item)
        for item in ("first", "second", "third")
    }
    with commit_lock:  # "first" and "second" queue while the lock is held: one batch
        threads["first"].start()
        wait_queued(1)
        threads["second"].start()
        wait_queued(2)
    assert first_batch_running.wait(10)
    threads["third"].start()
    wait_queued(1)  # arrived while the first batch runs: the next batch
    release_first_batch.set()
    for thread in threads.values():
        thread.join(20)
    assert results == {"first": "FIRST", "second": "SECOND", "third": "THIRD"}
    assert batches == [["first", "second"], ["third"]]
    assert [name for name in commit_lock.takers if name != "MainThread"] == ["first", "third"]


def test_group_commit_batches_stay_large_under_concurrent_callers() -> None:
    """Writers that come straight back after their answer keep making batches of about all of them. (Started at
    once, the batch after a full one held only who arrived while it committed: its callers came back during
    that small batch, and batches alternated between a few and nearly all, twice the batches per round.)"""
    writers, rounds = 8, 12
    sizes: list[int] = []

    def run_batch(items: list[int]) -> list[int | BaseException]:
        sizes.append(len(items))
        time.sleep(0.005)  # the transaction's round trips and commit: the writers' threads run meanwhile
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(run_batch, lock=threading.Lock(), max_weight=64)
    answers: list[int] = []

    def write(writer: int) -> None:
        for i in range(rounds):
            answers.append(committer.submit(writer * rounds + i))
            time.sleep(0.0005)  # answering the caller and preparing the next item

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == list(range(writers * rounds))
    # The first batches form while the writers start; after them, batches of (nearly) every writer.
    steady = sizes[2:-2]
    assert sum(steady) / len(steady) >= writers * 0.75, sizes
    assert len(sizes) <= rounds * 1.5, sizes


def test_a_lone_caller_does_not_wait_for_others() -> None:
    """Gathering waits only for callers that were about the last batch: one caller alone is not delayed."""
    committer: GroupCommitter[int, int] = GroupCommitter(
        lambda items: [time.sleep(0.05) or item for item in items], lock=threading.Lock(), max_weight=64
    )
    committer.submit(0)  # its batch ran 50 ms: a wait of one batch's time would show
    started = time.monotonic()
    assert committer.submit(1) == 1
    assert time.monotonic() - started < 0.09
