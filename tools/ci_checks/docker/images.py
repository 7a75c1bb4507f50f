"""The local images CI builds instead of pulling: a Python base and a Kafka broker.

Docker Hub is out of CI's reach, so neither ``python:3.11-slim`` nor ``apache/kafka``
can be pulled. Instead:

- **the Python base** is a Debian bookworm root file system made with
  ``debootstrap --variant=minbase`` (Python 3.11, pip, CA certificates), imported with
  ``docker import``. The certificates this host added to its trust store are added to
  the image's, so package downloads inside builds (PyPI, Debian) pass a TLS-inspecting
  proxy the host trusts; ``SSL_CERT_FILE`` points uv at that store. Debian's
  "externally managed" marker is removed: like the official image, it is a Python the
  image's owner installs into;
- **the Kafka image** is that base plus Debian's ``openjdk-17-jre-headless``, the jars
  the local broker runs (``tools/localkafka/broker.ensure_jars``, from Maven Central) and the
  ``kafka-tools`` jar for the two scripts the compose file uses; its entry point
  (``kafka_entrypoint.py``) reads the environment as ``apache/kafka`` does.

Each image carries a label with a hash of its recipe; an image whose label matches is
reused (the daemon's data persists between runs), any change rebuilds it. Builds use
the host network (``--network host``): the private daemon sets up no NAT.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tools.ci_checks.docker.engine import docker_cli, unmount_under
from tools.localkafka.broker import DEPENDENCY_PLUGIN, KAFKA_VERSION, cache_root, ensure_jars

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

HERE = Path(__file__).resolve().parent
PYTHON_BASE = "kafka-batch-runner-ci/python:3.11-bookworm"
KAFKA_IMAGE = f"kafka-batch-runner-ci/kafka:{KAFKA_VERSION}"
RECIPE_LABEL = "org.kafka-batch-runner.recipe"
SUITE = "bookworm"
MIRROR = os.environ.get("BATCH_RUNNER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
PACKAGES = ("ca-certificates", "python3", "python3-pip", "python-is-python3")
LOCAL_CERTIFICATES = Path("/usr/local/share/ca-certificates")
# Changes to how the base is made that the hash below would not see.
BASE_RECIPE_VERSION = "1"
IMAGE_ENV = {
    "LANG": "C.UTF-8",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


class ImageError(RuntimeError):
    """An image could not be built; the message says why (with the tail of the output)."""


@dataclass(frozen=True)
class Built:
    """An image the check needs: its tag, whether it was already there, and the build time."""

    tag: str
    cached: bool
    seconds: float


def _docker(env: Mapping[str, str], *args: str, timeout_s: float = 60) -> str:
    done = subprocess.run(  # noqa: S603 - the docker client, fixed arguments
        [docker_cli(), *args],
        capture_output=True,
        text=True,
        env={**env, "DOCKER_BUILDKIT": "0"},
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise ImageError(f"docker {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def label(env: Mapping[str, str], tag: str) -> str | None:
    """Return the recipe label of ``tag``, or None when the image does not exist."""
    try:
        out = _docker(
            env,
            "image",
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}',
            tag,
        )
    except ImageError:
        return None
    return out.strip()


def size_bytes(env: Mapping[str, str], tag: str) -> int:
    """Return the size of image ``tag`` as ``docker images`` reports it."""
    return int(_docker(env, "image", "inspect", "--format", "{{.Size}}", tag).strip())


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


def _local_certificates() -> list[Path]:
    if not LOCAL_CERTIFICATES.is_dir():
        return []
    return sorted(p for p in LOCAL_CERTIFICATES.rglob("*.crt") if p.is_file())


def base_recipe() -> str:
    """Return the hash of what goes into the Python base (packages, suite, certificates)."""
    return _digest(
        BASE_RECIPE_VERSION.encode(),
        SUITE.encode(),
        MIRROR.encode(),
        " ".join(PACKAGES).encode(),
        repr(sorted(IMAGE_ENV.items())).encode(),
        *(p.read_bytes() for p in _local_certificates()),
    )


def _run(
    argv: list[str], what: str, *, timeout_s: float, env: Mapping[str, str] | None = None
) -> None:
    done = subprocess.run(  # noqa: S603 - fixed tools, fixed arguments
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _chroot_env() -> dict[str, str]:
    """Return the environment for commands that run inside the new root file system.

    Only what they need: the host's ``TMPDIR`` (CI sets one) does not exist in there.
    """
    env = {k: v for k, v in os.environ.items() if k in {"http_proxy", "https_proxy", "no_proxy"}}
    return {**env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def _make_rootfs(rootfs: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageError(
            "debootstrap is needed for the local base image (apt-get install debootstrap)"
        )
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root to build the local base image")
    _run(
        [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            MIRROR,
        ],
        "debootstrap",
        timeout_s=900,
        env=_chroot_env(),
    )
    for cert in _local_certificates():
        target = rootfs / "usr/local/share/ca-certificates" / cert.relative_to(LOCAL_CERTIFICATES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cert, target)
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    _run(
        [chroot, str(rootfs), "update-ca-certificates"],
        "update-ca-certificates",
        timeout_s=120,
        env=_chroot_env(),
    )
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\n"
        f"deb {MIRROR} {SUITE}-updates main\n"
        f"deb {SECURITY_MIRROR} {SUITE}-security main\n",
    )
    for marker in (rootfs / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / junk).glob("*"):
            if item.is_file():
                item.unlink()


def ensure_python_base(env: Mapping[str, str], workdir: Path, say: Callable[[str], None]) -> Built:
    """Return the local Python base, made with debootstrap unless an up-to-date one exists."""
    recipe = base_recipe()
    if label(env, PYTHON_BASE) == recipe:
        return Built(PYTHON_BASE, cached=True, seconds=0.0)
    say(f"  building {PYTHON_BASE} with debootstrap ({SUITE}, {MIRROR})")
    started = time.monotonic()
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=workdir))
    try:
        _make_rootfs(rootfs)
        changes = [f"ENV {key}={value}" for key, value in IMAGE_ENV.items()]
        changes += [f"LABEL {RECIPE_LABEL}={recipe}", 'CMD ["python3"]']
        tar = shutil.which("tar") or "/usr/bin/tar"
        with subprocess.Popen(  # noqa: S603 - fixed arguments
            [tar, "-C", str(rootfs), "--numeric-owner", "-c", "."],
            stdout=subprocess.PIPE,
        ) as packer:
            args = [docker_cli(), "import"]
            for change in changes:
                args += ["--change", change]
            done = subprocess.run(  # noqa: S603 - the docker client, fixed arguments
                [*args, "-", PYTHON_BASE],
                stdin=packer.stdout,
                capture_output=True,
                text=True,
                env=dict(env),
                timeout=600,
                check=False,
            )
        if done.returncode != 0 or packer.returncode != 0:
            raise ImageError(f"docker import failed:\n{done.stderr[-3000:]}")
    finally:
        unmount_under(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)
    return Built(PYTHON_BASE, cached=False, seconds=time.monotonic() - started)


def ensure_tools_jar(cache: Path | None = None) -> Path:
    """Return the ``kafka-tools`` jar (TopicCommand, BrokerApiVersionsCommand), fetched once.

    Only that jar: what its commands need beyond it is already in the broker's classpath.
    """
    root = (cache or cache_root()) / f"kafka-{KAFKA_VERSION}-tools"
    jar = root / f"kafka-tools-{KAFKA_VERSION}.jar"
    if jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ImageError("mvn is needed to fetch kafka-tools (Debian: apt-get install maven)")
    with tempfile.TemporaryDirectory(prefix="kafka-tools-") as tmp:
        _run(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact=org.apache.kafka:kafka-tools:{KAFKA_VERSION}:jar",
                f"-DoutputDirectory={tmp}",
            ],
            "fetching kafka-tools with Maven",
            timeout_s=600,
        )
        root.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / jar.name), jar)
    return jar


def _kafka_context(context: Path) -> list[Path]:
    """Lay out the Kafka image's build context; return the files that define it."""
    libs = context / "libs"
    libs.mkdir(parents=True)
    jars = [*sorted(ensure_jars().glob("*.jar")), ensure_tools_jar()]
    for jar in jars:
        shutil.copyfile(jar, libs / jar.name)
    shutil.copytree(HERE / "kafka-bin", context / "bin")
    shutil.copyfile(HERE / "kafka_entrypoint.py", context / "kafka_entrypoint.py")
    shutil.copyfile(HERE / "kafka.Dockerfile", context / "Dockerfile")
    return [
        context / "Dockerfile",
        context / "kafka_entrypoint.py",
        *sorted((context / "bin").iterdir()),
    ]


def ensure_kafka_image(
    env: Mapping[str, str], base: str, workdir: Path, say: Callable[[str], None]
) -> Built:
    """Return the local Kafka image, built on ``base`` unless an up-to-date one exists."""
    base_id = _docker(env, "image", "inspect", "--format", "{{.Id}}", base).strip()
    with tempfile.TemporaryDirectory(prefix="kafka-image-", dir=workdir) as tmp:
        context = Path(tmp)
        files = _kafka_context(context)
        jar_names = sorted(p.name for p in (context / "libs").iterdir())
        recipe = _digest(
            base_id.encode(),
            "\n".join(jar_names).encode(),
            *(f.name.encode() + f.read_bytes() for f in files),
        )
        if label(env, KAFKA_IMAGE) == recipe:
            return Built(KAFKA_IMAGE, cached=True, seconds=0.0)
        say(f"  building {KAFKA_IMAGE} (Debian JRE, {len(jar_names)} jars from Maven Central)")
        started = time.monotonic()
        _docker(
            env,
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--label",
            f"{RECIPE_LABEL}={recipe}",
            "--tag",
            KAFKA_IMAGE,
            str(context),
            timeout_s=900,
        )
    return Built(KAFKA_IMAGE, cached=False, seconds=time.monotonic() - started)


def prune_old(env: Mapping[str, str], days: int = 7) -> None:
    """Remove untagged images older than ``days`` (superseded bases, stale build caches).

    Only for the private daemon: everything in it was made by these checks.
    """
    with contextlib.suppress(ImageError):
        _docker(env, "image", "prune", "--force", "--filter", f"until={days * 24}h", timeout_s=300)


def remove_containers(env: Mapping[str, str]) -> int:
    """Remove every container, running or not; return how many there were.

    Only for the private daemon: its containers are all this check's, and any there at
    the start were left by an earlier check that was interrupted (they would be taken
    for containers this run's tests left behind).
    """
    ids = _docker(env, "ps", "--all", "--quiet").split()
    if ids:
        _docker(env, "rm", "--force", "--volumes", *ids, timeout_s=300)
    return len(ids)
