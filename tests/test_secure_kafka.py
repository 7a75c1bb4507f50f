"""SASL_SSL (SCRAM-SHA-512) and mutual TLS through the librdkafka pass-through.

A broker of its own is started with TLS listeners whose certificates are made at test
time (trustme), and a SCRAM user added when its storage is formatted. The replica is
configured only through ``KAFKA_*`` variables, as a user would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trustme
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives import serialization

from tests.consumer_harness import Service, create_topics, read_results, submit, wait_exit
from tools.localkafka.broker import LocalKafka, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.consumer_harness import Replica
    from tools.testservers.inference import TestInferenceServer

pytestmark = pytest.mark.kafka

USER = "batch-runner"
PASSWORD = "scram-pass-5150"  # noqa: S105 - a test credential for a throwaway broker


def _pkcs8(key_pem: bytes) -> bytes:
    """Kafka's PEM keystores want PKCS#8 keys; trustme writes SEC1 EC keys."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class SecureBroker:
    """Addresses and client files of the secured broker."""

    def __init__(self, kafka: LocalKafka, sasl_port: int, mtls_port: int, files: Path) -> None:
        """Remember where to connect and which files to use."""
        self.plain = kafka.bootstrap_servers
        self.sasl = f"127.0.0.1:{sasl_port}"
        self.mtls = f"127.0.0.1:{mtls_port}"
        self.ca = files / "ca.pem"
        self.client_cert = files / "client.pem"
        self.client_key = files / "client.key"
        self.other_ca = files / "other-ca.pem"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """Start a broker with PLAINTEXT (setup), SASL_SSL (SCRAM-SHA-512) and SSL (mTLS)."""
    files = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("batch-runner-client")
    (files / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (files / "server.pem").write_bytes(
        _pkcs8(server.private_key_pem.bytes())
        + b"".join(p.bytes() for p in server.cert_chain_pems),
    )
    (files / "client.pem").write_bytes(b"".join(p.bytes() for p in client.cert_chain_pems))
    (files / "client.key").write_bytes(client.private_key_pem.bytes())
    (files / "other-ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    port, controller, sasl_port, mtls_port = (free_port() for _ in range(4))
    listeners = (
        f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},"
        f"SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{mtls_port}"
    )
    props = {
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
        ),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(files / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files / "ca.pem"),
        "listener.name.ssl.ssl.client.auth": "required",
    }
    scram = f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"
    kafka = LocalKafka(
        extra_properties=props,
        format_args=["--add-scram", scram],
        port=port,
        controller_port=controller,
    )
    with kafka:
        yield SecureBroker(kafka, sasl_port, mtls_port, files)


@pytest.fixture
def svc(
    secure_broker: SecureBroker, server: TestInferenceServer, tmp_path: Path
) -> Iterator[Service]:
    """Yield a service on fresh topics of the secured broker (made over PLAINTEXT).

    Replicas start with the plain address; each test points them at a secured listener.
    Every replica still running at teardown is killed.
    """
    admin = AdminClient({"bootstrap.servers": secure_broker.plain})
    service = Service(secure_broker.plain, create_topics(admin), server.endpoint("v1"), tmp_path)
    yield service
    service.stop_all()


def _sasl_env(broker: SecureBroker, password: str = PASSWORD) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": password,
        "KAFKA_SSL_CA_LOCATION": str(broker.ca),
    }


def _process_a_batch(
    broker: SecureBroker,
    svc: Service,
    batch_id: str,
    *,
    items: int,
    chunk_size: int,
    env: dict[str, str],
) -> Replica:
    """Submit ``items`` items over PLAINTEXT, start a replica with ``env``, read it all back.

    Every item must get one result and every chunk its summary; return the replica.
    """
    chunks = submit(
        broker.plain,
        svc.topics.requests,
        batch_id,
        [{"i": i} for i in range(items)],
        chunk_size=chunk_size,
    )
    replica = svc.start(**env)
    results, summaries, _ = read_results(
        broker.plain, svc.topics.results, expected_records=items + chunks
    )
    assert sorted(r.index for r in results) == list(range(items))
    assert len(summaries) == chunks
    return replica


def _start_up_failure_log(svc: Service, env: dict[str, str]) -> str:
    """Start a replica with ``env``, expect exit 2 (a start-up failure); return its log."""
    replica = svc.start(**env)
    assert wait_exit(replica, 60) == 2
    return replica.log()


def test_sasl_ssl_scram_replica_processes_a_batch(
    secure_broker: SecureBroker, svc: Service
) -> None:
    """A replica configured for SASL_SSL with SCRAM-SHA-512 consumes, calls the model, publishes."""
    env = _sasl_env(secure_broker)
    replica = _process_a_batch(secure_broker, svc, "sasl", items=20, chunk_size=10, env=env)
    svc.stop_all()
    assert PASSWORD not in replica.log()


def test_mutual_tls_replica_processes_a_batch(secure_broker: SecureBroker, svc: Service) -> None:
    """A replica presenting a client certificate on the mTLS listener works end to end."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": secure_broker.mtls,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CA_LOCATION": str(secure_broker.ca),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(secure_broker.client_cert),
        "KAFKA_SSL_KEY_LOCATION": str(secure_broker.client_key),
    }
    _process_a_batch(secure_broker, svc, "mtls", items=5, chunk_size=5, env=env)


def test_wrong_password_fails_at_start_up_with_a_clear_error(
    secure_broker: SecureBroker, svc: Service
) -> None:
    """Bad SCRAM credentials: exit 2 naming the authentication failure, password not shown."""
    wrong = "not-the-password-31"
    log = _start_up_failure_log(svc, _sasl_env(secure_broker, password=wrong))
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in log, log[-2000:]
    assert "not-the-password-31" not in log


def test_untrusted_broker_certificate_fails_at_start_up_with_a_clear_error(
    secure_broker: SecureBroker, svc: Service
) -> None:
    """A CA that did not sign the broker's certificate: exit 2 saying verification failed."""
    env = _sasl_env(secure_broker) | {"KAFKA_SSL_CA_LOCATION": str(secure_broker.other_ca)}
    log = _start_up_failure_log(svc, env)
    assert "certificate verify failed" in log, log[-2000:]
