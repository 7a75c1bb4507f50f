"""Train the iris classifier as ``batch-runner serve-model`` does, and save it with joblib.

Run by a real model server's own Python (see ``tools/testservers/real_servers.py``), so the saved
model matches the scikit-learn that loads it: a ``LogisticRegression(max_iter=1000)``
fitted on the 150 iris samples scikit-learn ships. The labels are the species names,
held as Python strings (an object array), so ``predict`` answers ``"setosa"``... like
``serve-model``; KServe's v2 answer cannot carry a numpy unicode array, an object array
it sends as ``BYTES``.

Usage: ``python train_iris.py MODEL.joblib``
"""

from __future__ import annotations

import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(argv: list[str]) -> int:
    """Train and save the model to ``argv[0]``."""
    if len(argv) != 1:
        print("usage: python train_iris.py MODEL.joblib", file=sys.stderr)  # noqa: T201
        return 2
    data = load_iris()
    species = data.target_names[data.target].astype(object)
    model = LogisticRegression(max_iter=1000).fit(data.data, species)
    joblib.dump(model, argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
