"""The bare Kafka loop: confluent-kafka alone, the Kafka half of the consumer's work.

``python -m bench.kafka_loop --bootstrap B --requests T --results R --items N`` joins a
fresh consumer group on the requests topic (a backlog produced beforehand), decodes
each request chunk with the contract's decoder, produces one result record per item
(the bytes the consumer would write for an identity answer, same producer settings)
and commits what is delivered, until ``N`` results are acknowledged. No HTTP: beside
the bare aiohttp loop it is the other floor of the sub-batched scenario's CPU per item.

It prints one JSON object: items/s and CPU per item (this process's user + system time,
``getrusage``, from the first message to the last acknowledgement) and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid

import orjson
from confluent_kafka import Consumer, Producer

from consumer.kafka_config import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS
from schemas import OkResultEncoder, decode_batch_request

COMMIT_EVERY_S = 1.0  # commit what is delivered this often (the consumer's default)


def run(bootstrap: str, requests: str, results: str, items: int) -> dict[str, float]:
    """Turn ``items`` items of ``requests`` into result records; return the figures."""
    consumer = Consumer(
        {
            **CONSUMER_DEFAULTS,
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-kafka-loop-{uuid.uuid4().hex[:8]}",
        }
    )
    producer = Producer(
        {**PRODUCER_DEFAULTS, "bootstrap.servers": bootstrap, "statistics.interval.ms": 0}
    )
    consumer.subscribe([requests])
    produced = 0
    before = started = None
    last_commit = time.monotonic()
    try:
        while produced < items:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            if batch and before is None:
                before = resource.getrusage(resource.RUSAGE_SELF)
                started = time.monotonic()
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"consume failed: {msg.error()}")
                request = decode_batch_request(msg.value() or b"")
                encode = OkResultEncoder(request, 1, 0.0)
                key = request.batch_id
                for i, item in enumerate(request.items):
                    _produce(producer, results, encode(request.start + i, item), key)
                produced += len(request.items)
                consumer.store_offsets(msg)  # stored now, committed once delivered
            producer.poll(0)
            if time.monotonic() - last_commit >= COMMIT_EVERY_S or produced >= items:
                if producer.flush(60) != 0:
                    raise RuntimeError("results not acknowledged within 60 s")
                consumer.commit(asynchronous=False)
                last_commit = time.monotonic()
        after = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = time.monotonic() - (started or 0.0)
    finally:
        consumer.close()
    cpu = 0.0
    if before is not None:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "items": items,
        "seconds": elapsed,
        "items_per_s": items / max(elapsed, 1e-6),
        "cpu_us_per_item": cpu / items * 1e6,
        "peak_rss_mib": after.ru_maxrss / 1024,
    }


def _produce(producer: Producer, topic: str, value: bytes, key: str) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
        except BufferError:
            producer.poll(0.005)
            continue
        return


def main(argv: list[str] | None = None) -> int:
    """Run the loop and print its figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_loop", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--requests", required=True, help="the requests topic (a backlog)")
    parser.add_argument("--results", required=True, help="the topic results go to")
    parser.add_argument("--items", type=int, required=True, help="items in the backlog")
    args = parser.parse_args(argv)
    figures = run(args.bootstrap, args.requests, args.results, args.items)
    sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
