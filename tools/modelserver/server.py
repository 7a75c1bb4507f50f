"""``batch-runner serve-model``: the reference iris inference server.

A scikit-learn logistic regression trained at start-up on the iris data set that
scikit-learn ships (nothing is downloaded), served over HTTP with aiohttp in the three
protocols the consumer speaks. An iris item is an object with ``sepal_length``,
``sepal_width``, ``petal_length`` and ``petal_width`` (other keys are ignored) or an
array of those four numbers, in that order. A prediction is the species name:
``"setosa"``, ``"versicolor"`` or ``"virginica"``.

Routes:

- ``POST /predict`` (``raw``): one item answers one label; a JSON array of items answers
  an array of labels. An array of four numbers is one item.
- ``POST /v1/models/iris:predict`` (``v1``): ``{"instances": [...]}`` answers
  ``{"predictions": [...]}``. ``GET /v1/models/iris`` tells whether it is ready.
- ``POST /v2/models/iris/infer`` (``v2``, Open Inference Protocol): a ``[n, 4]`` numeric
  tensor, one ``[n]`` tensor per feature name, or a ``BYTES`` tensor of items' JSON text.
  It answers a ``label`` output (``BYTES``, ``[n]``) and a ``probabilities`` output
  (``FP64``, ``[n, 3]``), or those asked for in the request's ``outputs``. Health and
  metadata: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/iris``,
  ``/v2/models/iris/ready``.

Malformed input answers 400 with ``{"error": "..."}``; an unknown route or model 404 and a
wrong method 405, in the same JSON form.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

from schemas.errors import BadInputError
from tools.modelserver.http_serving import serving

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

__all__ = [
    "FEATURES",
    "MODEL_NAME",
    "InputError",
    "IrisModel",
    "build_app",
    "register",
    "running_model_server",
]

log = logging.getLogger(__name__)

MODEL_NAME: Final = "iris"
MODEL_VERSION: Final = "1"
FEATURES: Final = ("sepal_length", "sepal_width", "petal_length", "petal_width")
NUMERIC_DATATYPES: Final = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"}
)


class InputError(BadInputError):
    """A request the server cannot read; answered with 400 and this message."""


@dataclass(frozen=True)
class IrisModel:
    """A trained iris classifier: rows of four features in, species and probabilities out."""

    classifier: Any
    labels: tuple[str, ...]

    @classmethod
    def train(cls) -> IrisModel:
        """Fit a logistic regression on the 150 iris samples scikit-learn ships."""
        from sklearn.datasets import load_iris  # noqa: PLC0415 - only the server needs sklearn
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        data = load_iris()
        classifier = LogisticRegression(max_iter=1000).fit(data.data, data.target)
        labels = tuple(str(name) for name in data.target_names)
        log.info("trained %s on %d iris samples", type(classifier).__name__, len(data.target))
        return cls(classifier=classifier, labels=labels)

    def predict(self, rows: Sequence[Sequence[float]]) -> tuple[list[str], list[list[float]]]:
        """Return the species and the class probabilities of each row."""
        if not rows:
            return [], []
        probabilities = self.classifier.predict_proba(rows)
        best = probabilities.argmax(axis=1)
        return [self.labels[i] for i in best], probabilities.tolist()


MODEL_KEY: Final = web.AppKey("model", IrisModel)


# --- reading items ----------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _row(item: object, where: str) -> list[float]:
    """Return the four features of one iris item, or raise ``InputError`` saying why not."""
    if isinstance(item, dict):
        missing = [name for name in FEATURES if name not in item]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        values = [item[name] for name in FEATURES]
        bad = [name for name, v in zip(FEATURES, values, strict=True) if not _is_number(v)]
        if bad:
            raise InputError(f"{where}: {', '.join(bad)} must be numbers")
        return values
    if isinstance(item, list):
        if len(item) != len(FEATURES) or not all(_is_number(v) for v in item):
            raise InputError(f"{where}: an array item must hold exactly 4 numbers ({FEATURES})")
        return item
    raise InputError(
        f"{where}: expected an object with {', '.join(FEATURES)} or an array of 4 numbers, "
        f"got {type(item).__name__}"
    )


def _rows(items: list[Any], where: str) -> list[list[float]]:
    return [_row(item, f"{where}[{i}]") for i, item in enumerate(items)]


async def _json_body(request: web.Request) -> object:
    body = await request.read()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"body is not valid JSON: {exc}") from exc


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _model(request: web.Request) -> IrisModel:
    name = request.match_info.get("name", MODEL_NAME)
    if name != MODEL_NAME:
        raise web.HTTPNotFound(reason=f"model {name!r} not found (this server has {MODEL_NAME!r})")
    return request.app[MODEL_KEY]


# --- raw and v1 -------------------------------------------------------------------------


async def predict_raw(request: web.Request) -> web.Response:
    """``POST /predict``: an item answers its label; an array of items, an array of labels."""
    model = _model(request)
    body = await _json_body(request)
    if isinstance(body, list) and not (body and all(_is_number(v) for v in body)):
        labels, _ = model.predict(_rows(body, "item"))
        return _json(labels)
    labels, _ = model.predict([_row(body, "item")])
    return _json(labels[0])


async def predict_v1(request: web.Request) -> web.Response:
    """``POST /v1/models/iris:predict``: ``{"instances": [...]}`` → ``{"predictions": [...]}``."""
    model = _model(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise InputError('expected an object with an "instances" array')
    labels, _ = model.predict(_rows(body["instances"], "instances"))
    return _json({"predictions": labels})


async def model_status_v1(request: web.Request) -> web.Response:
    """``GET /v1/models/iris``: the model's name and readiness."""
    _model(request)
    return _json({"name": MODEL_NAME, "ready": True})


# --- v2 (Open Inference Protocol) -------------------------------------------------------


def _tensor(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"{where}: a tensor must be an object")
    shape = value.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise InputError(f"{where}: shape must be a non-empty array of non-negative integers")
    if not isinstance(value.get("data"), list):
        raise InputError(f"{where}: data must be an array")
    if not isinstance(value.get("datatype"), str):
        raise InputError(f"{where}: datatype must be a string")
    return value


def _flat(tensor: dict[str, Any], where: str) -> list[Any]:
    """Return the tensor's data flattened row-major, checked against its shape."""
    data: list[Any] = tensor["data"]
    while data and isinstance(data[0], list):
        data = [x for part in data for x in part]
    expected = math.prod(tensor["shape"])
    if len(data) != expected:
        raise InputError(
            f"{where}: shape {tensor['shape']} needs {expected} values, data has {len(data)}"
        )
    return data


def _numeric(tensor: dict[str, Any], where: str) -> list[float]:
    if tensor["datatype"] not in NUMERIC_DATATYPES:
        raise InputError(f"{where}: datatype {tensor['datatype']} is not numeric")
    data = _flat(tensor, where)
    if not all(_is_number(v) for v in data):
        raise InputError(f"{where}: data must be numbers")
    return data


def _feature_rows(by_name: dict[Any, dict[str, Any]]) -> list[list[float]]:
    columns = []
    for name in FEATURES:
        tensor = by_name[name]
        where = f"input {name!r}"
        shape = tensor["shape"]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InputError(f"{where}: expected shape [n] or [n, 1], got {shape}")
        columns.append(_numeric(tensor, where))
    if len({len(c) for c in columns}) != 1:
        raise InputError("the feature tensors must all have the same length")
    return [list(row) for row in zip(*columns, strict=True)]


def _bytes_rows(tensor: dict[str, Any], where: str) -> list[list[float]]:
    items = []
    for i, text in enumerate(_flat(tensor, where)):
        if not isinstance(text, str):
            raise InputError(f"{where}[{i}]: BYTES elements must be strings of item JSON")
        try:
            items.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{where}[{i}]: not valid JSON: {exc}") from exc
    return _rows(items, where)


def _v2_rows(inputs: list[dict[str, Any]]) -> list[list[float]]:
    """Read iris rows from the request's tensors, in any of the three accepted layouts."""
    by_name = {t.get("name"): t for t in inputs}
    if all(name in by_name for name in FEATURES):
        return _feature_rows(by_name)
    if len(inputs) != 1:
        names = ", ".join(repr(t.get("name")) for t in inputs)
        raise InputError(
            f"expected one [n, 4] tensor, a BYTES tensor of items, or one tensor per feature "
            f"({', '.join(FEATURES)}); got inputs {names}"
        )
    tensor = inputs[0]
    where = f"input {tensor.get('name')!r}"
    if tensor["datatype"] == "BYTES":
        return _bytes_rows(tensor, where)
    shape = tensor["shape"]
    if len(shape) != 2 or shape[1] != len(FEATURES):
        raise InputError(f"{where}: expected shape [n, 4], got {shape}")
    data = _numeric(tensor, where)
    return [data[i : i + 4] for i in range(0, len(data), 4)]


def _requested_outputs(body: dict[str, Any]) -> list[str]:
    wanted = body.get("outputs")
    if wanted is None:
        return ["label", "probabilities"]
    if not isinstance(wanted, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise InputError('"outputs" must be an array of objects with a "name"')
    names = [o["name"] for o in wanted]
    unknown = [n for n in names if n not in {"label", "probabilities"}]
    if unknown:
        raise InputError(f"unknown output {unknown[0]!r} (this model has 'label', 'probabilities')")
    return names


async def infer_v2(request: web.Request) -> web.Response:
    """``POST /v2/models/iris/infer``: Open Inference Protocol inference."""
    model = _model(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InputError('expected an object with a non-empty "inputs" array')
    inputs = [_tensor(t, f"inputs[{i}]") for i, t in enumerate(body["inputs"])]
    names = _requested_outputs(body)
    rows = _v2_rows(inputs)
    labels, probabilities = model.predict(rows)
    n = len(rows)
    tensors = {
        "label": {"name": "label", "shape": [n], "datatype": "BYTES", "data": labels},
        "probabilities": {
            "name": "probabilities",
            "shape": [n, len(model.labels)],
            "datatype": "FP64",
            "data": [p for row in probabilities for p in row],
        },
    }
    answer: dict[str, Any] = {
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "outputs": [tensors[name] for name in names],
    }
    if isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    return _json(answer)


async def server_metadata(_: web.Request) -> web.Response:
    """``GET /v2``: the server's name, version and protocol extensions."""
    return _json({"name": "batch-runner-iris", "version": MODEL_VERSION, "extensions": []})


async def live(_: web.Request) -> web.Response:
    """``GET /v2/health/live``: the process answers."""
    return _json({"live": True})


async def ready(_: web.Request) -> web.Response:
    """``GET /v2/health/ready``: the model is trained (it is before the server listens)."""
    return _json({"ready": True})


async def model_metadata(request: web.Request) -> web.Response:
    """``GET /v2/models/iris``: the model's inputs and outputs."""
    model = _model(request)
    return _json(
        {
            "name": MODEL_NAME,
            "versions": [MODEL_VERSION],
            "platform": "scikit-learn",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(FEATURES)]}]
            + [{"name": name, "datatype": "FP64", "shape": [-1]} for name in FEATURES],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(model.labels)]},
            ],
        }
    )


async def model_ready(request: web.Request) -> web.Response:
    """``GET /v2/models/iris/ready``: the model can serve."""
    _model(request)
    return _json({"name": MODEL_NAME, "ready": True})


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer bad input and HTTP errors (404, 405, 413...) as ``{"error": "..."}``."""
    try:
        return await handler(request)
    except InputError as exc:
        return _json({"error": str(exc)}, status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"error": exc.reason}, status=exc.status)


def build_app(model: IrisModel | None = None) -> web.Application:
    """Return the iris server's application; trains a model unless one is given."""
    app = web.Application(middlewares=[json_errors])
    app[MODEL_KEY] = model if model is not None else IrisModel.train()
    app.router.add_post("/predict", predict_raw)
    app.router.add_post("/v1/models/{name}:predict", predict_v1)
    app.router.add_get("/v1/models/{name}", model_status_v1)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_post("/v2/models/{name}/infer", infer_v2)
    app.router.add_get("/v2/models/{name}", model_metadata)
    app.router.add_get("/v2/models/{name}/ready", model_ready)
    return app


@contextlib.asynccontextmanager
async def running_model_server(
    model: IrisModel | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the iris app on the running event loop; yield its base URL (``port=0``: free)."""
    async with serving(build_app(model), host=host, port=port) as url:
        yield url


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = build_app()
    log.info("serving model %r on http://%s:%d", MODEL_NAME, args.host, args.port)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        print=None,
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve-model`` to the ``batch-runner`` parser."""
    parser = subparsers.add_parser(
        "serve-model",
        help="serve the reference iris classifier over HTTP (raw, v1, v2)",
        description="Train a scikit-learn classifier on the bundled iris data and serve it: "
        "POST /predict (raw), /v1/models/iris:predict (v1), /v2/models/iris/infer (v2).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: %(default)s)",
    )
    parser.set_defaults(handler=_serve)
