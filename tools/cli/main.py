"""The ``batch-runner`` command: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the work and contributes a
``register(subparsers)`` function that adds its parser and sets ``handler`` to a
function taking the parsed namespace and returning the exit code. Modules are imported
only when their subcommand runs, so ``batch-runner --help`` stays fast and a broken
optional dependency (scikit-learn, say) only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# subcommand -> ("module:register function", one-line help)
CHECKOUT_ONLY = ("bench", "chaos", "tools.testservers")  # not in the wheel
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "submit": ("producer.cli:register_submit", "submit a batch from a file or stdin"),
    "tail": ("producer.cli:register_tail", "follow the results topic"),
    "collect": ("producer.cli:register_collect", "write a batch's results in input order"),
    "status": ("producer.cli:register_status", "a batch's counts and the group's lag"),
    "wait": ("producer.jobs_cli:register_wait", "wait for a batch's completion event"),
    "cancel": ("producer.jobs_cli:register_cancel", "cancel a batch"),
    "retry": ("producer.retry_cli:register_retry", "resubmit a finished batch's failed items"),
    "verify": ("producer.retry_cli:register_verify", "check every index has one final outcome"),
    "demo": ("tools.cli.demo:register", "run the whole pipeline once against the iris model"),
    "consume": ("consumer.__main__:register", "run a consumer replica"),
    "serve-model": (
        "tools.modelserver.server:register",
        "serve the reference iris classifier over HTTP",
    ),
    "real-server": (
        "tools.testservers.real_servers:register",
        "run MLServer or KServe serving the iris model",
    ),
    "bench": ("bench.run:register", "run the benchmarks (figures, not pass/fail)"),
    "chaos": ("chaos.run:register", "run the chaos suite (faults injected, figures reported)"),
    "kafka": ("tools.cli.kafka:register", "start, stop or inspect a local Kafka broker"),
}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    """Return the top-level parser; only ``selected``'s module is imported and registered."""
    parser = argparse.ArgumentParser(
        prog="batch-runner",
        description="Batch inference over Kafka: submit batches, run consumer replicas, "
        "read results.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (target, help_text) in SUBCOMMANDS.items():
        if name == selected:
            module_name, _, function = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name not in CHECKOUT_ONLY:
                    raise
                parser.error(
                    f"`batch-runner {name}` runs from a source checkout: the {exc.name} "
                    "package is not part of the installed wheel"
                )
            getattr(module, function)(subparsers)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batch-runner`` with ``argv`` (default: the process arguments)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((arg for arg in args_list if not arg.startswith("-")), None)
    parser = build_parser(selected if selected in SUBCOMMANDS else None)
    args = parser.parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
