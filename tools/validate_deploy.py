"""Validate ``deploy/`` offline: Kubernetes schemas, KEDA's fields, and our own invariants.

``python -m tools.validate_deploy [DIR]`` checks every manifest:

- core kinds against the Kubernetes OpenAPI schemas bundled in ``kubernetes-validate``
  (strict: unknown fields are errors), for :data:`KUBERNETES_VERSION`;
- KEDA kinds against ``deploy/schemas/keda.v1alpha1.json``, the subset of KEDA's fields
  this project uses (KEDA's CRDs are not on a package registry);
- the project's rules: the consumer's grace period exceeds its drain timeout, probes and
  metrics use the port the configuration names, the ScaledObject targets the consumer and
  never scales past the partition count, kustomization lists files that exist.

Exit 0 when everything holds; otherwise each problem on a line and exit 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"
DRAIN_MARGIN_S = 5
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "deploy"


def load(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    """Return ``(file name, document)`` for every YAML document in ``directory``."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _by_kind(docs: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == kind}


def check_schemas(docs: list[tuple[str, dict[str, Any]]], directory: Path) -> list[str]:
    """Validate each document against its schema; return the problems."""
    keda = json.loads((directory / "schemas" / "keda.v1alpha1.json").read_text())
    problems = []
    for name, doc in docs:
        label = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "Kustomization":
            missing = [r for r in doc.get("resources", []) if not (directory / r).exists()]
            problems += [f"{label}: resource {r} does not exist" for r in missing]
            continue
        if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            kind = str(doc.get("kind"))
            if kind not in keda["$defs"]:
                problems.append(f"{label}: no schema for KEDA kind {kind}")
                continue
            schema = {"$ref": f"#/$defs/{kind}", "$defs": keda["$defs"]}
            for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                path = ".".join(str(p) for p in error.absolute_path)
                problems.append(f"{label}: {path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{label}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{label}: no schema: {exc}")
    return problems


def check_rules(docs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Check the project's own invariants across documents; return the problems."""
    problems = []
    deployments = _by_kind(docs, "Deployment")
    config = _by_kind(docs, "ConfigMap").get("batch-runner-consumer", {}).get("data", {})
    consumer = deployments.get("batch-runner-consumer")
    if consumer is None:
        return ["no Deployment named batch-runner-consumer"]
    pod = consumer["spec"]["template"]["spec"]
    drain = float(config.get("BATCH_RUNNER_DRAIN_TIMEOUT_S", 30))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < drain + DRAIN_MARGIN_S:
        problems.append(
            f"consumer terminationGracePeriodSeconds {grace} must exceed "
            f"BATCH_RUNNER_DRAIN_TIMEOUT_S {drain:g} by at least {DRAIN_MARGIN_S}s",
        )
    container = pod["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    metrics_port = int(config.get("BATCH_RUNNER_METRICS_PORT", 9100))
    if ports.get("metrics") != metrics_port:
        problems.append(f"container port 'metrics' must be {metrics_port} (the configured one)")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in {"metrics", metrics_port}:
            problems.append(f"consumer {probe} must GET {path} on the metrics port")
    return problems + check_scaling(docs, config)


def check_scaling(docs: list[tuple[str, dict[str, Any]]], config: dict[str, str]) -> list[str]:
    """Check the ScaledObjects: their target, their cap, their consumer group."""
    problems = []
    deployments = _by_kind(docs, "Deployment")
    for scaled in _by_kind(docs, "ScaledObject").values():
        spec = scaled["spec"]
        if spec["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"ScaledObject targets unknown {spec['scaleTargetRef']['name']}")
        partitions = (
            scaled["metadata"].get("annotations", {}).get("batch-runner/requests-partitions")
        )
        if partitions is None:
            problems.append("ScaledObject needs the batch-runner/requests-partitions annotation")
        elif spec.get("maxReplicaCount", 100) > int(partitions):
            problems.append(
                f"ScaledObject maxReplicaCount {spec.get('maxReplicaCount', 100)} exceeds "
                f"the {partitions} partitions of batch-requests (extra replicas would idle)",
            )
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] == "kafka" and meta.get("consumerGroup") != config.get(
                "BATCH_RUNNER_GROUP_ID",
                "batch-runner",
            ):
                problems.append("the Kafka trigger must watch the consumers' group")
    return problems


def validate(directory: Path = DEFAULT_DIR) -> list[str]:
    """Return every problem found in ``directory`` (empty: all good)."""
    docs = load(directory)
    return check_schemas(docs, directory) + check_rules(docs)


def main(argv: list[str] | None = None) -> int:
    """Validate the directory given (default ``deploy/``) and report."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else DEFAULT_DIR
    problems = validate(directory)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)  # noqa: T201
    if not problems:
        count = len(load(directory))
        print(f"{directory}: {count} documents valid (Kubernetes {KUBERNETES_VERSION})")  # noqa: T201
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
