"""Iris items for examples, the demo and load tests, sampled from scikit-learn's own copy.

``python -m tools.modelserver.iris_data N OUT.jsonl`` writes N items (features only, one JSON object
per line); :func:`sample` also returns the species of each, so the demo can score the
model's predictions. No download: scikit-learn ships the data set.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import orjson

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def sample(count: int, seed: int = 7) -> tuple[list[dict[str, float]], list[str]]:
    """Return ``count`` iris rows drawn with replacement, and their species names."""
    from sklearn.datasets import load_iris  # noqa: PLC0415 - heavy, only when sampling

    data = load_iris()
    rows = [[float(v) for v in row] for row in data.data]
    species = [str(data.target_names[t]) for t in data.target]
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    picks = [rng.randrange(len(rows)) for _ in range(count)]
    items = [dict(zip(FEATURES, rows[i], strict=True)) for i in picks]
    return items, [species[i] for i in picks]


def main(argv: list[str] | None = None) -> int:
    """Write a JSONL file of sampled iris items."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit():
        print("usage: python -m tools.modelserver.iris_data COUNT OUT.jsonl", file=sys.stderr)  # noqa: T201
        return 2
    items, _ = sample(int(args[0]))
    Path(args[1]).write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
