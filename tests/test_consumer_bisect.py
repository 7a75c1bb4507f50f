"""Poison isolation end to end: real broker, real test server, a replica as a process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.consumer_harness import read_results, submit

if TYPE_CHECKING:
    from tests.consumer_harness import MakeService
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka


def test_only_the_refused_items_of_a_sub_batched_request_get_an_error(
    kafka_bootstrap: str,
    server: TestInferenceServer,
    make_service: MakeService,
) -> None:
    """200 items at 50 per request, 3 refused (422) and 1 miscounted: 196 ok results.

    The refused items' errors carry the server's status and message; the miscounted one
    is a ``wrong_count``; the chunk summaries count 196 ok and 4 errors.
    """
    server.configure(poison_status=422)
    svc = make_service()
    refused, miscounted = {3, 77, 78}, 150
    items: list[object] = [
        {"i": i, "fail": "permanent"}
        if i in refused
        else {"i": i, "fail": "wrong_count"}
        if i == miscounted
        else {"i": i}
        for i in range(200)
    ]
    chunks = submit(
        kafka_bootstrap, svc.topics.requests, "bisect", items, chunk_size=100, items_per_request=50
    )
    svc.start()
    results, summaries, _ = read_results(
        kafka_bootstrap, svc.topics.results, expected_records=len(items) + chunks
    )
    by_index = {r.index: r for r in results}
    assert sorted(by_index) == list(range(200))
    errors = {i for i, r in by_index.items() if r.status == "error"}
    assert errors == {*refused, miscounted}
    for i in refused:
        error = by_index[i].error
        assert error is not None
        assert (error.kind, error.http_status) == ("http_status", 422)
        assert "test server answered 422" in error.message
    wrong = by_index[miscounted].error
    assert wrong is not None
    assert wrong.kind == "wrong_count"
    assert sum(s.ok for s in summaries) == 196
    assert sum(s.error for s in summaries) == 4
