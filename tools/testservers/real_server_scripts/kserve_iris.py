"""Serve the iris model with KServe's ``ModelServer``, reading inputs as KServe's sklearn server.

KServe's own sklearn runtime (``sklearnserver``) is not published on PyPI, so this is
the same model class in a few lines: it loads the joblib file and, for each request,
turns the payload into model input with KServe's ``get_predict_input`` (v1 instances
become a numpy array, or a pandas frame per object; v2 reads ``inputs[0]`` unless the
request says ``"parameters": {"content_type": "pd"}``), calls ``predict`` and answers
with ``get_predict_response``, raising KServe's ``InferenceError`` (HTTP 500) when the
model fails, as ``sklearnserver`` does.

Run by KServe's own Python (see ``tools/testservers/real_servers.py``):
``python kserve_iris.py --model_name iris --model_path MODEL.joblib --http_port 8080``
plus any of ``kserve.model_server``'s flags.
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
from kserve.errors import InferenceError
from kserve.utils.utils import get_predict_input, get_predict_response


class IrisModel(kserve.Model):
    """A scikit-learn model loaded from a joblib file, served as KServe serves sklearn."""

    def __init__(self, name: str, path: str) -> None:
        """Load the model at ``path``; it is ready at once."""
        super().__init__(name)
        self._model = joblib.load(path)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:  # noqa: ANN401, ARG002 - KServe's signature
        """Predict for a v1 or v2 payload, as KServe's sklearn server does."""
        try:
            instances = get_predict_input(payload)
            return get_predict_response(payload, self._model.predict(instances), self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


def main() -> None:
    """Parse KServe's flags plus ``--model_path`` and serve until stopped."""
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True, help="the model's joblib file")
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([IrisModel(args.model_name, args.model_path)])


if __name__ == "__main__":
    main()
