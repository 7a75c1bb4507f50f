"""The entry point of the CI's Kafka image: ``apache/kafka``'s environment conventions.

The CI cannot pull ``apache/kafka`` (no Docker Hub), so it builds an image of its own from
the jars the local broker uses (``tools/localkafka/broker.py``) and a Debian JRE
(``tools/ci_checks/docker/kafka.Dockerfile``). This script is that image's entry point; it reads
the environment the way ``apache/kafka`` does, so ``docker-compose.yml`` and
``tools/localkafka/cluster.py`` configure both images the same way:

- every ``KAFKA_*`` variable except the JVM and logging ones becomes a broker property:
  drop the prefix, lower-case, then ``___`` → ``-``, ``__`` → ``_``, ``_`` → ``.``
  (``KAFKA_NODE_ID`` → ``node.id``, ``KAFKA_ABC__DEF`` → ``abc_def``);
- without ``KAFKA_LISTENERS`` the listeners are the advertised ones on ``0.0.0.0``;
- with no property in the environment at all, a single-node KRaft default applies;
- ``CLUSTER_ID`` names the cluster (a fixed default otherwise); storage is formatted on
  first start and kept on later ones;
- ``KAFKA_HEAP_OPTS`` and ``KAFKA_OPTS`` reach the JVM, ``KAFKA_LOG4J_ROOT_LOGLEVEL`` the
  console log.

It then replaces itself with ``java … kafka.Kafka``, so the broker gets the container's
signals directly. Standard library only: it runs on the image's Debian Python.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

HOME = Path("/opt/kafka")
# A fixed id as in the official image: a container's storage is formatted once, by it.
DEFAULT_CLUSTER_ID = "P1ajr8sPShezaRV9IoapkQ"
# Variables that configure the JVM, the scripts or logging, not the broker.
NOT_PROPERTIES = frozenset(
    {
        "KAFKA_HEAP_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL",
        "KAFKA_TOOLS_OPTS",
        "KAFKA_DEBUG",
        "KAFKA_HOME",
        "KAFKA_VERSION",
    },
)
# With nothing configured: one combined broker and controller, reachable on localhost:9092.
DEFAULTS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.quorum.voters": "1@localhost:9093",
    "listeners": "PLAINTEXT://:9092,CONTROLLER://:9093",
    "advertised.listeners": "PLAINTEXT://localhost:9092",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "log.dirs": "/tmp/kraft-combined-logs",  # noqa: S108 - the official image's default
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}
LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.console.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def property_name(variable: str) -> str:
    """Return the broker property a ``KAFKA_*`` variable names (``KAFKA_NODE_ID`` → ``node.id``)."""
    name = variable.removeprefix("KAFKA_").lower()
    # Placeholders keep the longer runs from being read as shorter ones.
    name = name.replace("___", "\0").replace("__", "\1").replace("_", ".")
    return name.replace("\0", "-").replace("\1", "_")


def _any_host(listener: str) -> str:
    """Return ``NAME://host:port`` with the host replaced by ``0.0.0.0``."""
    scheme, sep, address = listener.partition("://")
    port = address.rpartition(":")[2]
    return f"{scheme}{sep}0.0.0.0:{port}"


def broker_properties(env: Mapping[str, str]) -> dict[str, str]:
    """Return the broker's ``server.properties`` as the environment ``env`` describes them."""
    props = {
        property_name(name): value
        for name, value in sorted(env.items())
        if name.startswith("KAFKA_") and name not in NOT_PROPERTIES
    }
    if not props:
        return dict(DEFAULTS)
    if "listeners" not in props and "advertised.listeners" in props:
        props["listeners"] = ",".join(
            _any_host(listener.strip()) for listener in props["advertised.listeners"].split(",")
        )
    return props


def format_arguments(props: Mapping[str, str], cluster_id: str, config: Path) -> list[str]:
    """Return the ``StorageTool format`` arguments for these properties.

    A controller that finds its quorum through ``controller.quorum.bootstrap.servers``
    (no static ``controller.quorum.voters``) formats as a standalone quorum of one.
    """
    args = ["format", "--cluster-id", cluster_id, "--config", str(config), "--ignore-formatted"]
    is_controller = "controller" in props.get("process.roles", "")
    if is_controller and "controller.quorum.voters" not in props:
        args.append("--standalone")
    return args


def write_config(home: Path, env: Mapping[str, str]) -> tuple[Path, dict[str, str]]:
    """Write ``server.properties`` and the log configuration under ``home/config``."""
    config_dir = home / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    props = broker_properties(env)
    config = config_dir / "server.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
    level = env.get("KAFKA_LOG4J_ROOT_LOGLEVEL", "INFO")
    (config_dir / "log4j2.properties").write_text(LOG4J2.format(level=level))
    return config, props


def main(argv: list[str] | None = None) -> None:
    """Configure, format on first start, then become the broker (``exec java``).

    Exits (:class:`SystemExit`) with a message and a non-zero status on failure.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=HOME, help="holds libs/ and config/")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    java = shutil.which("java")
    if java is None:
        raise SystemExit("java was not found on PATH")
    config, props = write_config(args.home, env)
    classpath = f"{args.home / 'libs'}/*"
    cluster_id = env.get("CLUSTER_ID") or DEFAULT_CLUSTER_ID
    done = subprocess.run(  # noqa: S603 - java from PATH, fixed arguments
        [
            java,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            *format_arguments(props, cluster_id, config),
        ],
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"formatting the storage failed (exit {done.returncode})")
    jvm = [
        *shlex.split(env.get("KAFKA_HEAP_OPTS", "-Xmx512m -Xms512m")),
        *shlex.split(
            env.get("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseG1GC -Djava.awt.headless=true")
        ),
        *shlex.split(env.get("KAFKA_OPTS", "")),
    ]
    command = [
        java,
        *jvm,
        f"-Dlog4j2.configurationFile={config.parent / 'log4j2.properties'}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(config),
    ]
    sys.stdout.flush()
    os.execv(java, command)  # noqa: S606 - the broker replaces this process


if __name__ == "__main__":
    main()
