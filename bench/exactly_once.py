"""Scenario 8: what ``--exactly-once`` costs, beside at-least-once in the same run.

Two pairs of pipeline runs on one server: sub-batched (100 items a request, L = 5 ms,
as scenario 3) and one item a request (L = 20 ms, C = 64, as scenario 1), each first
without and then with ``--exactly-once``. The figures are the throughput ratios and the
peak RSS of both (exactly-once holds a message's records until its turn, within the
buffer cap). The results reader reads with ``isolation.level=read_committed``, so the
exactly-once clock stops when the last transaction is committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.kafka_io import Backlog

if TYPE_CHECKING:
    from bench.scenarios import Context


def exactly_once_cost(ctx: Context) -> dict[str, Any]:
    """Throughput with ``--exactly-once`` ÷ without, sub-batched and one item a request."""
    from bench.scenarios import Goal, pipeline_run, result  # noqa: PLC0415 - it imports this

    sub_items = ctx.size(200_000, 5_000)
    one_items = ctx.size(20_000, 600)
    runs: dict[str, Any] = {}
    with ctx.server(5.0) as server:
        sub = Backlog(sub_items, chunk_size=1000, items_per_request=100)
        for mode in ("at_least_once", "exactly_once"):
            runs[f"sub_batched_{mode}"] = pipeline_run(
                ctx, server, sub, label=f"ipr100-{mode}", max_in_flight=64,
                exactly_once=mode == "exactly_once",
            )  # fmt: skip
    with ctx.server(20.0) as server:
        one = Backlog(one_items, chunk_size=500)
        for mode in ("at_least_once", "exactly_once"):
            runs[f"one_item_{mode}"] = pipeline_run(
                ctx, server, one, label=f"c64-{mode}", max_in_flight=64,
                exactly_once=mode == "exactly_once",
            )  # fmt: skip
    figures: dict[str, Any] = {"sub_batched_items": sub_items, "one_item_items": one_items}
    for kind in ("sub_batched", "one_item"):
        alo, eos = runs[f"{kind}_at_least_once"], runs[f"{kind}_exactly_once"]
        figures |= {
            f"{kind}_items_per_s": alo["items_per_s"],
            f"{kind}_eos_items_per_s": eos["items_per_s"],
            f"{kind}_eos_ratio": eos["items_per_s"] / alo["items_per_s"],
            f"{kind}_peak_rss_mib": alo["peak_rss_mib"],
            f"{kind}_eos_peak_rss_mib": eos["peak_rss_mib"],
            f"{kind}_eos_cpu_us_per_item": eos["consumer_cpu_us_per_item"],
            f"{kind}_cpu_us_per_item": alo["consumer_cpu_us_per_item"],
        }
    figures["item_errors"] = sum(run["item_errors"] for run in runs.values())
    beside = (
        f"at-least-once in the same run: {figures['sub_batched_items_per_s']:,.0f} items/s "
        f"sub-batched, {figures['one_item_items_per_s']:,.0f} items/s one item a request"
    )
    return result(
        f"8 exactly-once cost (sub-batched {sub_items:,} items at L=5 ms; "
        f"1 item/request {one_items:,} items at L=20 ms, C=64)",
        figures,
        [Goal("sub_batched_eos_ratio", ">=", 0.7), Goal("one_item_eos_ratio", ">=", 0.8)],
        runs,
        beside,
    )
