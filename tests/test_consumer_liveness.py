"""Liveness: every assigned partition keeps moving through rebalances, drains and outages.

Each test reproduces a way a partition used to stop (or a replica used to stall) and
asserts that work still completes. Real broker, real HTTP server, replicas as processes.
"""

from __future__ import annotations

import signal
import zlib
from collections import Counter
from typing import TYPE_CHECKING

import orjson
import pytest
from confluent_kafka import Consumer

from schemas import Result, decode_results_record
from tests.consumer_harness import committed_total, read_results, submit, wait_exit
from tests.helpers import http_get, wait_for
from tools.localkafka.broker import free_port

if TYPE_CHECKING:
    from tests.consumer_harness import MakeService
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def batch_on(partition: int, partitions: int, prefix: str) -> str:
    """Return a batch id that librdkafka's default partitioner puts on ``partition``.

    The default (``consistent_random``) maps a key to CRC-32(key) modulo the count.
    """
    n = 0
    while True:
        batch_id = f"{prefix}-{n}"
        if zlib.crc32(batch_id.encode()) % partitions == partition:
            return batch_id
        n += 1


def test_a_paused_partition_that_comes_back_is_fetched_again(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A partition paused by backpressure, revoked, then assigned back is fetched again.

    Replica A fills its buffer (both partitions paused); B joins and takes one of them;
    once everything is done B stops and its partition goes back to A, whose buffer is
    now empty. New batches on both partitions must be answered: librdkafka keeps a
    partition's pause flag across revoke and assign, so a replica that does not resume
    what it is given never fetches that partition again.
    """
    server.configure(latency_ms=20.0)
    svc = make_service(
        partitions=2,
        BATCH_RUNNER_MAX_IN_FLIGHT="2",
        BATCH_RUNNER_MAX_BUFFERED_ITEMS="10",
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
    )
    first = {batch_on(p, 2, f"first-p{p}"): [{"p": p, "i": i} for i in range(500)] for p in (0, 1)}
    for batch_id, items in first.items():
        submit(kafka_bootstrap, svc.topics.requests, batch_id, items, chunk_size=5)
    a = svc.start()
    wait_for(lambda: "paused fetching" in a.log(), what="replica A to pause its partitions")
    b = svc.start()
    wait_for(
        lambda: '"partitions":["' in b.log(),
        timeout_s=60,
        what="replica B to take a partition",
    )
    read_results(kafka_bootstrap, svc.topics.results, expected_records=1000 + 200, timeout_s=120)
    b.signal(signal.SIGTERM)
    assert wait_exit(b, 60) == 0
    wait_for(
        lambda: a.log().count("partitions assigned") >= 2,
        what="the partition to go back to replica A",
    )
    second = {batch_on(p, 2, f"second-p{p}"): [{"p": p, "j": i} for i in range(20)] for p in (0, 1)}
    for batch_id, items in second.items():
        submit(kafka_bootstrap, svc.topics.requests, batch_id, items, chunk_size=5)
    results, _, _ = read_results(
        kafka_bootstrap,
        svc.topics.results,
        expected_records=1200 + 40 + 8,
        timeout_s=60,
    )
    answered = Counter(r.batch_id for r in results)
    for batch_id in second:
        assert answered[batch_id] >= 20, f"{batch_id} was never fetched: {answered}"


def test_a_partition_given_back_gets_places_at_once_not_after_its_abandoned_units(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A partition revoked and given back to the same replica is worked on again at once.

    Replica A has the units of both partitions queued for its two places. A plain
    consumer joins the group, takes one partition (A abandons its queued units) and
    leaves: the partition comes back to A, which fetches it again. The abandoned units
    used to stay queued in the batch's lane, each declining its turn only when the turn
    came, so the returned partition's new units waited behind them while the other
    partition took every freed place (10 s without progress in the chaos suite's rolling
    restart). Counted in answers, not seconds: how many of the other partition's items
    were answered after the partition came back and before its first new answer.
    """
    server.configure(latency_ms=100.0)
    svc = make_service(
        partitions=2,
        BATCH_RUNNER_MAX_IN_FLIGHT="2",
        BATCH_RUNNER_MAX_BUFFERED_ITEMS="600",
        BATCH_RUNNER_LOG_LEVEL="DEBUG",
    )
    batches = {batch_on(p, 2, f"lane-p{p}"): [{"p": p, "i": i} for i in range(300)] for p in (0, 1)}
    for batch_id, items in batches.items():
        submit(kafka_bootstrap, svc.topics.requests, batch_id, items, chunk_size=100)
    a = svc.start()
    wait_for(lambda: "paused fetching" in a.log(), what="replica A to fill its buffer")
    taken: list[int] = []
    other = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": svc.group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
        }
    )
    other.subscribe(
        [svc.topics.requests],
        on_assign=lambda _, tps: taken.extend(tp.partition for tp in tps),
    )
    wait_for(lambda: bool(other.poll(0.2)) or bool(taken), what="a partition for the other member")
    other.close()  # leaves the group: the partition goes back to A
    moved = taken[0]

    def given_back() -> float | None:
        assigned = [e for e in a.events() if e.get("event") == "partitions assigned"]
        back = [e for e in assigned[1:] if f"[{moved}]" in str(e.get("partitions"))]
        return float(str(back[0]["ts"])) if back else None

    wait_for(lambda: given_back() is not None, what="the partition to go back to A")
    back_ms = (given_back() or 0.0) * 1000
    results, _, messages = read_results(kafka_bootstrap, svc.topics.results, expected_records=606)
    answered = {(r.batch_id, r.index) for r in results}
    assert len(answered) == 600, "every item is answered"
    moved_batch = next(b for b in batches if zlib.crc32(b.encode()) % 2 == moved)
    after: list[tuple[int, str]] = []
    for m in messages:
        record = decode_results_record(m.value() or b"")
        if isinstance(record, Result) and m.timestamp()[1] > back_ms:
            after.append((m.timestamp()[1], record.batch_id))
    after.sort()
    first = next(i for i, (_, batch_id) in enumerate(after) if batch_id == moved_batch)
    # Fetching it again takes a few hundred ms (about 5 answers of the other partition at
    # 2 places of 100 ms): 11 in a run; behind its abandoned units it was 142.
    assert first <= 60, f"{first} answers of the other partition came first"


def results_per_item(kafka_bootstrap: str, topic: str, expected: int) -> Counter[tuple[str, int]]:
    """Read the results topic (at least ``expected`` records); count results per item."""
    results, _, _ = read_results(kafka_bootstrap, topic, expected_records=expected, timeout_s=120)
    return Counter((r.batch_id, r.index) for r in results)


def test_sigterm_while_a_rebalance_is_pending_drains_commits_and_repeats_nothing(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """SIGTERM while another replica joins: the drain serves the rebalance and commits.

    A replica that stopped polling while it drained held the rebalance up for everyone
    (the joining replica got nothing until the drain was over) and its commits could then
    fail. Here it keeps polling with its partitions paused: the rebalance completes while
    it drains (it gives up some partitions then, and the rest when it leaves), it exits
    0, its commits succeed, and no item of the batch gets two results.
    """
    server.configure(latency_ms=1000.0)
    svc = make_service(partitions=4, BATCH_RUNNER_MAX_IN_FLIGHT="8")
    items = [{"i": i} for i in range(80)]
    batches = {batch_on(p, 4, f"pending-p{p}"): items for p in range(4)}
    chunks = 0
    for batch_id, batch in batches.items():
        chunks += submit(kafka_bootstrap, svc.topics.requests, batch_id, batch, chunk_size=20)
    a = svc.start()
    read_results(kafka_bootstrap, svc.topics.results, expected_records=8, timeout_s=60)
    b = svc.start()
    wait_for(lambda: "consuming" in b.log(), what="replica B to ask to join")
    a.signal(signal.SIGTERM)
    assert wait_exit(a, 60) == 0, a.log()[-3000:]
    counts = results_per_item(kafka_bootstrap, svc.topics.results, 4 * len(items) + chunks)
    assert set(counts) == {(b_id, i) for b_id in batches for i in range(len(items))}
    repeated = {key: n for key, n in counts.items() if n > 1}
    assert not repeated, f"{len(repeated)} items answered twice, e.g. {list(repeated)[:5]}"
    revokes = [e for e in a.events() if e["event"] == "partitions revoked"]
    assert len(revokes) >= 2, f"the rebalance waited for the drain to end: {revokes}"
    log = a.log()
    assert "commit failed" not in log.replace("commit failed; will retry", ""), log[-3000:]
    assert "Traceback" not in log
    assert "Traceback" not in b.log()


def test_a_slow_model_and_a_short_poll_interval_do_not_evict_a_replica_on_revoke(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """The revoke grace stays inside max.poll.interval.ms: no eviction, no lost partitions.

    With a 2 s model, max.poll.interval.ms at 7 s and the default 10 s revoke grace, the
    member waiting in its revoke callback outlived the group's rebalance timeout: it was
    evicted, its commit on revoke failed (UNKNOWN_MEMBER_ID) and the cycle repeated.
    """
    server.configure(latency_ms=2000.0)
    svc = make_service(
        partitions=2,
        BATCH_RUNNER_MAX_IN_FLIGHT="4",
        BATCH_RUNNER_SESSION_TIMEOUT_S="6",
        KAFKA_MAX_POLL_INTERVAL_MS="7000",
    )
    items = [{"i": i} for i in range(16)]
    batches = {batch_on(p, 2, f"slow-p{p}"): items for p in range(2)}
    chunks = sum(
        submit(kafka_bootstrap, svc.topics.requests, batch_id, batch, chunk_size=2)
        for batch_id, batch in batches.items()
    )
    a = svc.start()
    wait_for(lambda: server.stats().in_flight > 0, what="replica A to be busy")
    b = svc.start()
    counts = results_per_item(kafka_bootstrap, svc.topics.results, 2 * len(items) + chunks)
    assert set(counts) == {(b_id, i) for b_id in batches for i in range(len(items))}
    for replica in (a, b):
        log = replica.log()
        assert "partitions lost" not in log, log[-3000:]
        assert "UNKNOWN_MEMBER_ID" not in log
        assert "Unknown member" not in log


def test_a_partition_stalled_without_reason_fails_healthz_and_recovers(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """A partition with work that stops moving fails /healthz, named, and recovers after.

    The model hangs (no answer, no error, within a long request timeout): after the stall
    timeout /healthz answers 503 naming the partition, and the stalled-partitions metric
    is 1. Once the model answers again the partition moves and /healthz is 200.
    """
    server.configure(script=("hang",))
    svc = make_service(
        BATCH_RUNNER_STALL_TIMEOUT_S="2",
        BATCH_RUNNER_REQUEST_TIMEOUT_S="300",
    )
    submit(kafka_bootstrap, svc.topics.requests, "hung", [{"i": 0}], chunk_size=1)
    port = free_port()
    svc.start(BATCH_RUNNER_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.stats().in_flight == 1, what="the request to hang")

    def stalled() -> bytes | None:
        status, body = http_get(f"{url}/healthz")
        return body if status == 503 else None

    body = wait_for(stalled, timeout_s=60, what="/healthz to report the stall")
    doc = orjson.loads(body)
    assert f"{svc.topics.requests}[0]" in doc["status"]
    assert doc["partitions"][f"{svc.topics.requests}[0]"]["stalled"]
    assert "batch_runner_stalled_partitions 1.0" in http_get(f"{url}/metrics")[1].decode()
    server.release_hangs()
    read_results(kafka_bootstrap, svc.topics.results, expected_records=2, timeout_s=60)
    wait_for(lambda: http_get(f"{url}/healthz")[0] == 200, what="/healthz to recover")


def test_consumer_only_options_stay_off_the_producer_and_rebalances_log_no_warnings(
    kafka_bootstrap: str,
    make_service: MakeService,
) -> None:
    """Consumer-only -X options make no CONFWARN; a rebalance logs no commit warning.

    They used to reach the producer (three configuration warnings at start-up), and every
    rebalance logged an ILLEGAL_GENERATION commit failure as a warning.
    """
    svc = make_service(
        partitions=2,
        KAFKA_MAX_POLL_INTERVAL_MS="60000",
        KAFKA_FETCH_MIN_BYTES="1",
        KAFKA_ISOLATION_LEVEL="read_committed",
    )
    items = [{"i": i} for i in range(400)]
    chunks = sum(
        submit(
            kafka_bootstrap, svc.topics.requests, batch_on(p, 2, f"opt-p{p}"), items, chunk_size=20
        )
        for p in range(2)
    )
    a = svc.start()
    read_results(kafka_bootstrap, svc.topics.results, expected_records=100, timeout_s=60)
    b = svc.start()
    wait_for(lambda: '"partitions":["' in b.log(), what="replica B to take a partition")
    read_results(kafka_bootstrap, svc.topics.results, expected_records=800 + chunks, timeout_s=60)
    for replica in (a, b):
        replica.signal(signal.SIGTERM)
        assert wait_exit(replica, 60) == 0
        events = replica.events()
        assert not [e for e in events if "CONFWARN" in str(e.get("event"))]
        warnings = [e for e in events if e["level"] in {"warning", "error"}]
        assert not warnings, warnings


def test_a_drain_ends_within_its_timeout_and_commits_nothing_unfinished(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """SIGTERM with a unit in a long backoff: the drain gives up at its deadline.

    One item of a two-item chunk is answered, the other is told to come back in 100 s
    (503 with Retry-After): the chunk is started, so the drain waits for it, but only until
    ``--drain-timeout``; then the replica abandons it (its offset stays uncommitted, the
    group redoes it), leaves the group and exits 0, well before the backoff would end.
    """
    server.configure(retry_after_s=100.0)
    svc = make_service(BATCH_RUNNER_DRAIN_TIMEOUT_S="4", BATCH_RUNNER_MAX_ATTEMPTS="5")
    items = [{"i": 0}, {"i": 1, "fail": [503, "ok"]}]
    submit(kafka_bootstrap, svc.topics.requests, "backoff", items, chunk_size=2)
    replica = svc.start()
    read_results(kafka_bootstrap, svc.topics.results, expected_records=1, timeout_s=60)
    wait_for(lambda: server.stats().answers.get("503", 0) == 1, what="the 503 answer")
    replica.signal(signal.SIGTERM)
    assert wait_exit(replica, 20) == 0, replica.log()[-3000:]
    assert "drain timeout" in replica.log()
    assert committed_total(svc) == 0


def test_replicas_stopped_all_at_once_commit_what_they_drained(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """Three replicas get SIGTERM together: each commits what it drained; nothing repeats.

    Their leaving starts rebalances while each drains, which refuse a commit of the old
    generation; the drain retries through them (and commits inside the revoke callback,
    where the generation is still current). A replica started afterwards finishes the
    batches, and no item of them has two results.
    """
    server.configure(latency_ms=20.0)
    svc = make_service(partitions=6, BATCH_RUNNER_MAX_IN_FLIGHT="8")
    items = [{"i": i} for i in range(300)]
    batches = {batch_on(p, 6, f"all-p{p}"): items for p in range(6)}
    chunks = sum(
        submit(kafka_bootstrap, svc.topics.requests, batch_id, batch, chunk_size=50)
        for batch_id, batch in batches.items()
    )
    replicas = [svc.start() for _ in range(3)]
    wait_for(
        lambda: all('"partitions":["' in r.log() for r in replicas),
        timeout_s=60,
        what="every replica to own partitions",
    )
    read_results(kafka_bootstrap, svc.topics.results, expected_records=300, timeout_s=60)
    for replica in replicas:
        replica.signal(signal.SIGTERM)
    for replica in replicas:
        assert wait_exit(replica, 60) == 0, replica.log()[-3000:]
    after = svc.start()
    counts = results_per_item(kafka_bootstrap, svc.topics.results, 6 * len(items) + chunks)
    assert set(counts) == {(b_id, i) for b_id in batches for i in range(len(items))}
    repeated = {key: n for key, n in counts.items() if n > 1}
    assert not repeated, f"{len(repeated)} items answered twice, e.g. {list(repeated)[:5]}"
    assert "Traceback" not in after.log()
