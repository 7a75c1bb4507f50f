"""A misbehaving-on-purpose inference server for tests and benchmarks.

The model is the identity: each item's prediction is the item itself, so a test can check
that every result landed at the right index. It speaks the consumer's three protocols:

- ``POST /predict`` (``raw``): a JSON array is a list of items and is echoed back; any
  other value is one item and is echoed back. (An array sent as one ``raw`` item is
  therefore counted as its elements; the echo is still exact.)
- ``POST /v1/models/{name}:predict`` (``v1``): ``{"instances": [...]}`` answers
  ``{"predictions": [...]}`` with the same values.
- ``POST /v2/models/{name}/infer`` (``v2``): the input tensors come back as the output
  tensors, unchanged. Items are counted along the first dimension: rows of a ``[n, k]``
  tensor, records of one ``[n]`` tensor per key, or the JSON texts of a ``BYTES`` tensor.

Every item is identified by :func:`item_key` (its compact JSON re-encoding), under which
the server counts how many requests carried it (its attempts).

What the server does to a request is set per run in a :class:`ServerConfig`:

- ``latency_ms`` (and ``latency_max_ms`` for a uniform random latency) before answering;
- a capacity model: ``max_concurrency`` (K, ``--capacity``) requests are served at once;
  with ``overload="reject"`` a request arriving while K are served answers 429 with
  ``Retry-After: retry_after_s`` at once, with ``overload="queue"`` it waits for a place,
  first come, first served (its latency grows). K may change at run time
  (``/_control/config``): a smaller K lets the excess finish, a larger one admits waiters;
- ``outage``: every model request's connection is reset (a server that is down);
- ``script``: actions consumed one per request, in order; when it runs out requests are
  served normally;
- ``item_scripts``: per item key, the action for its 1st, 2nd, ... attempt;
- items may also carry their own directives: an object item with ``"fail": "permanent"``
  is always answered ``poison_status``; ``"fail": <action>`` always that action;
  ``"fail": [<action>, ...]`` that action for its 1st, 2nd, ... attempt (attempt-based
  scripts need ``track_items``, on by default); and
  ``"delay_ms": <number>`` adds that much latency to its request.

An action is an HTTP status (``503``; ``200`` is a normal answer; 429 and 503 carry
``Retry-After``), ``"ok"``, ``"reset"`` (the connection is reset mid-request),
``"hang"`` (no answer until the client gives up or the server is reset), ``"truncated"``
(half the body, short of its ``Content-Length``, then a reset), ``"garbage"`` (200 with
a non-JSON body), ``"wrong_count"`` (one prediction fewer, or two for a single item) or
``"delay:<ms>"`` (answer normally after that much extra latency). When several apply,
a permanent item failure wins, then the request script, then the first item action
that is not ``ok``.

OpenAI-compatible routes (``openai``) are :mod:`~tools.testservers.inference.openai_routes`:
``POST /v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` answer
deterministically with ``usage``, and can answer 429 with ``retry-after-ms`` and state
``x-ratelimit-*`` budgets (``/_control/openai/...`` scripts them).

Three ways to run it:

1. In the test's event loop: ``async with TestInferenceServer(config) as server``.
2. In a background thread with its own loop: ``with TestInferenceServer(config) as
   server`` (for tests whose consumer runs as a subprocess).
3. As a process: ``python -m tools.testservers.inference --port 0 --latency-ms 20`` prints its URL
   on standard output and serves until SIGTERM/SIGINT. ``GET /_control/stats``,
   ``GET``/``POST /_control/config`` (fields to change) and ``POST /_control/reset``
   script it from outside; these routes exist in the other modes too.

:meth:`TestInferenceServer.stats` reports what arrived: requests, items, answers by
outcome, requests in flight and the most seen at once, requests served and queued,
attempts per item key, request sizes and protocols, a histogram of the time 200 answers
spent in the server, and counts of chosen request headers (``record_headers``).

The modules, one job each (under :mod:`tools.testservers.inference`): ``config`` (actions,
config, stats, item keys), ``identity`` (reading requests and writing the identity answers
per protocol), ``state`` (the counters and the handling of a request), ``app`` (the
routes), ``server`` (running it in a loop or a thread) and ``cli`` (as a process).
"""

from tools.testservers.inference.app import build_app
from tools.testservers.inference.cli import main
from tools.testservers.inference.config import ServerConfig, ServerStats, item_key
from tools.testservers.inference.server import TestInferenceServer
from tools.testservers.inference.state import ServerState

__all__ = [
    "ServerConfig",
    "ServerState",
    "ServerStats",
    "TestInferenceServer",
    "build_app",
    "item_key",
    "main",
]
