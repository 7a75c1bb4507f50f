"""Validate ``deploy/`` offline: Kubernetes schemas, KEDA's fields, and our own invariants.

``python -m tools.ci_checks.validate_deploy [DIR]`` checks every manifest:

- core kinds against the Kubernetes OpenAPI schemas bundled in ``kubernetes-validate``
  (strict: unknown fields are errors), for :data:`KUBERNETES_VERSION`;
- KEDA kinds against ``deploy/schemas/keda.v1alpha1.json``, the subset of KEDA's fields
  this project uses (KEDA's CRDs are not on a package registry);
- the consumer's configuration: its container's environment (the ConfigMap, the
  container's own ``env``, placeholders for values from Secrets) builds the real
  :class:`consumer.settings.Settings`, so an invalid value fails with the settings' own
  message; a ``BATCH_RUNNER_*`` name the settings do not read is an error (the service
  would ignore it); files the configuration names lie on mounted volumes;
- the project's rules: the consumer's grace period exceeds its drain timeout, probes and
  metrics use the port the settings name, the ScaledObject targets the consumer (which
  then sets no ``replicas``), never scales past the partition count and watches the
  consumers' group, topic and cluster, kustomization lists files that exist.

Exit 0 when everything holds; otherwise each problem on a line and exit 1.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import kubernetes_validate
import yaml

from consumer.env_names import unknown_variables
from consumer.settings import Settings
from schemas.errors import ConfigError

KUBERNETES_VERSION = "1.31.0"
DRAIN_MARGIN_S = 5
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "deploy"


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


CONSUMER = "batch-runner-consumer"
# What a value taken from a Secret (or the downward API) stands for while validating.
PLACEHOLDER = "placeholder-from-secret"


def _label(docs: list[tuple[str, dict[str, Any]]], kind: str, name: str) -> str:
    files = [f for f, d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    return f"{files[0]}: {kind}/{name}" if files else f"{kind}/{name}"


def container_env(
    docs: list[tuple[str, dict[str, Any]]],
    container: dict[str, Any],
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Return the environment ``container`` would see, where each name comes from, problems.

    ``envFrom`` ConfigMaps are read from ``docs``; ``env`` entries override them, as in
    Kubernetes. A value from a Secret stands as :data:`PLACEHOLDER` (Secrets are created
    out of band, so their values are not here to read).
    """
    config_maps = _by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        ref = source.get("configMapRef")
        if ref is None:
            continue  # a secretRef: its names are not known offline
        if ref["name"] not in config_maps:
            if not ref.get("optional", False):
                problems.append(f"container {container['name']}: ConfigMap/{ref['name']} not found")
            continue
        for key, value in config_maps[ref["name"]].get("data", {}).items():
            env[prefix + key] = str(value)
            sources[prefix + key] = _label(docs, "ConfigMap", ref["name"])
    for var in container.get("env", []):
        env[var["name"]] = str(var["value"]) if "value" in var else PLACEHOLDER
        sources[var["name"]] = f"container {container['name']} env"
    return env, sources, problems


class MountedFile(NamedTuple):
    """What the manifests tell about a file a container is configured to read."""

    content: str | None = None  # None when it is not known offline
    source: str | None = None  # the document the content comes from
    problem: str | None = None


def mounted_file(
    docs: list[tuple[str, dict[str, Any]]],
    pod: dict[str, Any],
    container: dict[str, Any],
    path: str,
) -> MountedFile:
    """Return what is known of the file at ``path`` in ``container``.

    The file must lie on one of the container's volume mounts (the image's own files are
    not configuration). Its content is known when the volume is a ConfigMap or Secret in
    ``docs`` (``secret.example.yaml`` included) holding that key.
    """
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if (path == m["mountPath"] if m.get("subPath") else path.startswith(m["mountPath"] + "/"))
    ]
    if not mounts:
        return MountedFile(
            problem=f"{path} is on no volume mounted in container {container['name']}"
        )
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    relative = mount.get("subPath") or path.removeprefix(mount["mountPath"] + "/")
    volume = next((v for v in pod.get("volumes", []) if v["name"] == mount["name"]), None)
    if volume is None:
        return MountedFile(problem=f"volume {mount['name']} at {mount['mountPath']} is not defined")
    return _volume_file(docs, volume, relative, path)


def _volume_file(
    docs: list[tuple[str, dict[str, Any]]],
    volume: dict[str, Any],
    relative: str,
    path: str,
) -> MountedFile:
    """Return what is known of ``relative`` in a Secret or ConfigMap ``volume``."""
    if "secret" in volume:
        kind, source, name = "Secret", volume["secret"], volume["secret"]["secretName"]
    elif "configMap" in volume:
        kind, source, name = "ConfigMap", volume["configMap"], volume["configMap"]["name"]
    else:
        return MountedFile()  # an emptyDir, a CSI volume...: its content is not known here
    key = relative
    if "items" in source:
        keys = {item["path"]: item["key"] for item in source["items"]}
        if relative not in keys:
            return MountedFile(
                problem=f"{path}: {relative} is not among the items of volume {volume['name']}",
            )
        key = keys[relative]
    document = _by_kind(docs, kind).get(name)
    if document is None:
        return MountedFile()  # created out of band
    files = {k: str(v) for k, v in document.get("data", {}).items()}
    if kind == "Secret":
        try:
            files = {k: base64.b64decode(v).decode() for k, v in files.items()}
        except ValueError:
            return MountedFile(problem=f"{_label(docs, kind, name)}: data must be base64 text")
        files.update({k: str(v) for k, v in document.get("stringData", {}).items()})
    if key not in files:
        return MountedFile(problem=f"{path}: {_label(docs, kind, name)} has no key {key}")
    return MountedFile(files[key], f"{_label(docs, kind, name)} {key}")


def consumer_settings(
    docs: list[tuple[str, dict[str, Any]]],
    pod: dict[str, Any],
) -> tuple[Settings | None, list[str]]:
    """Build the consumer's real :class:`Settings` from its manifests; return them, problems.

    The environment is the container's (:func:`container_env`); a file the settings read
    (``BATCH_RUNNER_HEADERS_FILE``) must be on a mounted volume and is read from the example
    Secret when it is there. An invalid value fails with the settings' own message, as the
    replica would at start-up; a ``BATCH_RUNNER_*`` name the settings do not read (a typo,
    which the service would silently ignore) is an error too.
    """
    container = pod["containers"][0]
    env, sources, problems = container_env(docs, container)
    for name, close in unknown_variables(env).items():
        hint = f" (did you mean {close}?)" if close else ""
        problems.append(f"{sources[name]}: {name} is not a setting the consumer reads{hint}")
    for name in sorted(n for n in env if n.startswith("KAFKA_") and n.endswith("_LOCATION")):
        problem = mounted_file(docs, pod, container, env[name]).problem
        if problem:
            problems.append(f"{sources[name]}: {name}: {problem}")
    origins = set(sources.values())
    with tempfile.TemporaryDirectory(prefix="validate-deploy-") as tmp:
        headers_file = env.get("BATCH_RUNNER_HEADERS_FILE")
        local = Path(tmp) / "headers.json"
        if headers_file:
            found = mounted_file(docs, pod, container, headers_file)
            if found.problem:
                problems.append(f"{sources['BATCH_RUNNER_HEADERS_FILE']}: {found.problem}")
            if found.source:
                origins.add(found.source)
            local.write_text("{}" if found.content is None else found.content)
            env["BATCH_RUNNER_HEADERS_FILE"] = str(local)
        try:
            settings = Settings.from_env(env)
        except ConfigError as exc:
            text = str(exc).replace(str(local), str(headers_file))
            origin = " + ".join(sorted(origins)) or f"container {container['name']}"
            return None, [*problems, f"consumer settings: {text} (environment from {origin})"]
    return settings, problems


def check_rules(docs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Check the project's own invariants across documents; return the problems."""
    consumer = _by_kind(docs, "Deployment").get(CONSUMER)
    if consumer is None:
        return [f"no Deployment named {CONSUMER}"]
    pod = consumer["spec"]["template"]["spec"]
    settings, problems = consumer_settings(docs, pod)
    if settings is not None:
        problems += check_consumer_pod(pod, settings)
    return problems + check_scaling(docs, settings)


def check_consumer_pod(pod: dict[str, Any], settings: Settings) -> list[str]:
    """Check the consumer's pod against its settings: grace period, port, probes."""
    problems = []
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < settings.drain_timeout_s + DRAIN_MARGIN_S:
        problems.append(
            f"consumer terminationGracePeriodSeconds {grace} must exceed "
            f"BATCH_RUNNER_DRAIN_TIMEOUT_S {settings.drain_timeout_s:g} by at least "
            f"{DRAIN_MARGIN_S}s",
        )
    container = pod["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    metrics_port = settings.metrics_port
    if metrics_port <= 0:
        return [
            *problems,
            f"BATCH_RUNNER_METRICS_PORT {metrics_port}: the probes need a fixed port",
        ]
    if ports.get("metrics") != metrics_port:
        problems.append(f"container port 'metrics' must be {metrics_port} (the configured one)")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in {"metrics", metrics_port}:
            problems.append(f"consumer {probe} must GET {path} on the metrics port")
    return problems


def check_scaling(docs: list[tuple[str, dict[str, Any]]], settings: Settings | None) -> list[str]:
    """Check the ScaledObjects: their target, their cap, what their Kafka trigger watches.

    A Deployment a ScaledObject scales must not set ``replicas``: KEDA owns the count, and
    a fixed one would reset it on every ``kubectl apply``. Without valid ``settings`` (that
    problem is reported on its own) the trigger is not compared with them.
    """
    problems = []
    deployments = _by_kind(docs, "Deployment")
    for name, scaled in _by_kind(docs, "ScaledObject").items():
        spec = scaled["spec"]
        target = spec["scaleTargetRef"]["name"]
        if spec["scaleTargetRef"].get("kind", "Deployment") != "Deployment":
            problems.append(f"ScaledObject {name} must scale a Deployment")
        elif target not in deployments:
            problems.append(f"ScaledObject targets unknown {target}")
        elif "replicas" in deployments[target]["spec"]:
            problems.append(
                f"Deployment {target} is scaled by ScaledObject {name}, so it must not set "
                "replicas (every kubectl apply would reset KEDA's count)",
            )
        partitions = (
            scaled["metadata"].get("annotations", {}).get("batch-runner/requests-partitions")
        )
        if partitions is None or not partitions.isdigit():
            problems.append(
                "ScaledObject needs the batch-runner/requests-partitions annotation "
                "(the partition count of batch-requests)",
            )
        elif spec.get("maxReplicaCount", 100) > int(partitions):
            problems.append(
                f"ScaledObject maxReplicaCount {spec.get('maxReplicaCount', 100)} exceeds "
                f"the {partitions} partitions of batch-requests (extra replicas would idle)",
            )
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            problems.append(f"ScaledObject {name}: minReplicaCount exceeds maxReplicaCount")
        for trigger in spec["triggers"]:
            if trigger["type"] == "kafka" and settings is not None:
                problems += _check_kafka_trigger(name, trigger["metadata"], settings)
    return problems


def _check_kafka_trigger(name: str, meta: dict[str, str], settings: Settings) -> list[str]:
    problems = []
    if meta.get("consumerGroup") != settings.group_id:
        problems.append(
            f"ScaledObject {name}: the Kafka trigger must watch the consumers' group "
            f"{settings.group_id} (BATCH_RUNNER_GROUP_ID), not {meta.get('consumerGroup')}",
        )
    if meta.get("topic") != settings.requests_topic:
        problems.append(
            f"ScaledObject {name}: the Kafka trigger must watch the requests topic "
            f"{settings.requests_topic} (BATCH_RUNNER_REQUESTS_TOPIC), not {meta.get('topic')}",
        )
    if meta.get("bootstrapServers") != settings.bootstrap_servers:
        problems.append(
            f"ScaledObject {name}: the Kafka trigger's bootstrapServers must be the consumers' "
            f"KAFKA_BOOTSTRAP_SERVERS {settings.bootstrap_servers}",
        )
    return problems


def validate(directory: Path = DEFAULT_DIR) -> list[str]:
    """Return every problem found in ``directory`` (empty: all good)."""
    docs = load(directory)
    problems = check_schemas(docs, directory)
    try:
        problems += check_rules(docs)
    except (KeyError, TypeError, AttributeError, IndexError):
        if not problems:
            raise
        # The rules read documents the schemas accept: the schema problems come first.
    return problems


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
