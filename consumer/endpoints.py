"""The inference endpoints a replica may call, configured on the consumer, never by messages.

The default endpoint comes from ``BATCH_RUNNER_ENDPOINT`` and ``BATCH_RUNNER_PROTOCOL``
(or ``--endpoint``, ``--protocol``); named ones, which a request selects with ``target``,
from ``BATCH_RUNNER_TARGETS`` (or ``--target NAME=PROTOCOL:URL``). Request headers (an
``Authorization`` token) come from ``BATCH_RUNNER_HEADERS_FILE`` or
``BATCH_RUNNER_ENDPOINT_HEADERS``, codec options from ``BATCH_RUNNER_CODEC`` (or
``--codec [TARGET:]KEY=VALUE``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from consumer.protocols import (
    DEFAULT_OPTIONS,
    PROTOCOLS,
    CodecOptions,
    ProtocolName,
    codec_options,
    get_codec,
)
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_TARGET = "default"
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An inference endpoint configured on the consumer (never taken from a message).

    ``headers`` (an ``Authorization`` token, say) are sent with every request to it; they
    come from the environment or a file, never from a message, and never appear in a repr.
    ``codec`` says how items are shaped for it and predictions read from its answers.
    """

    name: str
    url: str
    protocol: ProtocolName = "v1"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    codec: CodecOptions = DEFAULT_OPTIONS

    def __post_init__(self) -> None:
        """Validate the name, the URL and the protocol."""
        if not _TARGET_NAME.match(self.name):
            raise ConfigError(f"target name {self.name!r}: use letters, digits, '.', '_', '-'")
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"endpoint {self.name!r}: {self.url!r} is not an http:// or https:// URL",
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"endpoint {self.name!r}: protocol {self.protocol!r} is not one of "
                f"{', '.join(PROTOCOLS)}",
            )
        try:
            get_codec(self.protocol, self.codec)
        except ValueError as exc:
            raise ConfigError(f"endpoint {self.name!r}: {exc}") from None


def parse_target(spec: str) -> Endpoint:
    """Parse ``name=PROTOCOL:URL`` (or ``name=URL`` for protocol v1) into an :class:`Endpoint`."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ConfigError(f"target {spec!r}: expected NAME=PROTOCOL:URL")
    protocol, colon, url = rest.partition(":")
    if colon and protocol in PROTOCOLS:
        return Endpoint(name=name.strip(), url=url.strip(), protocol=protocol)
    return Endpoint(name=name.strip(), url=rest.strip())


def _json_object(source: str, text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"{source}: not valid JSON") from None  # never echo the content
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    return value


def _string_map(source: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{source}: must map header names to strings")
    return dict(value)


def _headers(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Collect per-target request headers from a JSON file and/or the environment.

    ``BATCH_RUNNER_HEADERS_FILE`` (or ``--headers-file``): ``{"target": {"Name": "value"}}``
    (``default`` for the default endpoint), e.g. a mounted Kubernetes Secret.
    ``BATCH_RUNNER_ENDPOINT_HEADERS``: ``{"Name": "value"}`` for the default endpoint.
    """
    out: dict[str, dict[str, str]] = {}
    path = given.get("headers_file") or env.get("BATCH_RUNNER_HEADERS_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"headers file {path}: {exc.strerror}") from None
        for target, headers in _json_object(f"headers file {path}", text).items():
            out[target] = _string_map(f"headers file {path}: {target!r}", headers)
    inline = env.get("BATCH_RUNNER_ENDPOINT_HEADERS")
    if inline:
        source = "BATCH_RUNNER_ENDPOINT_HEADERS"
        headers = _string_map(source, _json_object(source, inline))
        out.setdefault(DEFAULT_TARGET, {}).update(headers)
    return out


def endpoints_from_env(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Endpoint]:
    """Return the endpoints ``env`` and the flags in ``given`` configure, by name.

    Headers and codec options configured for a target that does not exist are a
    :class:`~schemas.errors.ConfigError`, as is any invalid value.
    """
    endpoints: dict[str, Endpoint] = {}
    url = given.get("endpoint") or env.get("BATCH_RUNNER_ENDPOINT")
    protocol = given.get("protocol") or env.get("BATCH_RUNNER_PROTOCOL") or "v1"
    if url:
        endpoints[DEFAULT_TARGET] = Endpoint(
            name=DEFAULT_TARGET,
            url=url,
            protocol=cast("ProtocolName", protocol),
        )
    specs = re.split(r"[\s,]+", env.get("BATCH_RUNNER_TARGETS", "").strip())
    specs += list(given.get("targets") or [])
    for spec in specs:
        if spec:
            endpoint = parse_target(spec)
            endpoints[endpoint.name] = endpoint
    for target, headers in _headers(env, given).items():
        if target not in endpoints:
            raise ConfigError(f"headers are configured for target {target!r}, which does not exist")
        endpoints[target] = dataclasses.replace(endpoints[target], headers=headers)
    for target, values in _codec_values(env, given).items():
        if target not in endpoints:
            raise ConfigError(
                f"codec options are configured for target {target!r}, which does not exist",
            )
        endpoint = endpoints[target]
        try:
            options = codec_options(endpoint.protocol, values)
        except ValueError as exc:
            raise ConfigError(f"endpoint {target!r}: {exc}") from None
        endpoints[target] = dataclasses.replace(endpoint, codec=options)
    return endpoints


def _codec_values(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Collect ``[TARGET:]KEY=VALUE`` codec options per target (flags after the variable).

    ``BATCH_RUNNER_CODEC`` holds entries separated by whitespace, split as a shell would
    (quotes keep spaces in a value); ``--codec`` gives one entry per flag. An entry
    without ``TARGET:`` is for the default endpoint; a later entry for the same key wins.
    """
    text = env.get("BATCH_RUNNER_CODEC", "")
    try:
        entries = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"BATCH_RUNNER_CODEC: {exc}") from None
    entries += list(given.get("codec") or [])
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        left, sep, value = entry.partition("=")
        target, colon, key = left.rpartition(":")
        if not sep or not key.strip():
            raise ConfigError(f"codec option {entry!r}: expected [TARGET:]KEY=VALUE")
        name = target.strip() if colon else DEFAULT_TARGET
        out.setdefault(name, {})[key.strip()] = value
    return out
