"""``errorgate`` command line. Core commands live here; areas add theirs as modules in
``errorgate.commands`` exposing ``add_commands(subparsers)``."""

from __future__ import annotations

import argparse
import gc
import importlib
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Protocol

from errorgate import __version__
from errorgate.config import Config, ConfigError, load_config


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit."""


class ServiceRole(Protocol):
    """Something ``errorgate serve`` runs next to the gateway, in the same process (the incident
    engine). A command module declares its roles with ``service_roles(config) -> list[ServiceRole]``,
    so the gateway itself never learns about them."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _command_modules() -> Iterator[ModuleType]:
    import errorgate.commands as commands

    for module in pkgutil.iter_modules(commands.__path__):
        if not module.name.startswith("_"):
            yield importlib.import_module(f"errorgate.commands.{module.name}")


def service_roles(config: Config) -> list[ServiceRole]:
    """Every role the config turns on. Built before anything listens: a bad role setting stops
    ``serve`` before the gateway accepts data."""
    roles: list[ServiceRole] = []
    for mod in _command_modules():
        declare = getattr(mod, "service_roles", None)
        if declare is not None:
            roles.extend(declare(config))
    return roles


def _serve(args: argparse.Namespace) -> int:
    from errorgate.logs import configure_logging
    from errorgate.service.gateway import Gateway
    from errorgate.service.memory import limit_malloc_arenas

    limit_malloc_arenas()
    config = load_config(args.config)
    logs = config.service.telemetry.logs
    configure_logging(logs.level, logs.encoding)
    roles = service_roles(config)
    gateway = Gateway(config)
    gateway.start()
    started: list[ServiceRole] = []
    try:
        for role in roles:
            role.start()
            started.append(role)
        _tune_gc()
        return gateway.run_until_signalled()
    finally:
        # After the gateway stopped (or failed to start a role): the roles go with it.
        gateway.stop()  # a no-op when it already stopped
        for role in reversed(started):
            role.stop()


def _tune_gc() -> None:
    """A long-running server: the objects built at start-up (config, catalogs, recognizers, the
    spaCy model) live for the whole process, so move them out of the collector's sight, and
    collect the youngest generation less often — per-span work allocates short-lived objects in
    bursts, and a collection every 700 of them was a measurable share of the gateway's CPU."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


GC_GEN0_THRESHOLD = 20_000


def _validate_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    pipelines = ", ".join(
        f"{name} ({len(p.receivers)} receivers, {len(p.processors)} processors, {len(p.exporters)} exporters)"
        for name, p in config.service.pipelines.items()
    )
    print(f"{args.file}: valid — pipelines: {pipelines}")
    return 0


def _print_default_config(args: argparse.Namespace) -> int:
    from errorgate.config import default_config_text

    sys.stdout.write(default_config_text())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from errorgate.demo.run import run_demo

    return run_demo(duration=args.duration, quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="errorgate",
        description="Error-control gateway for OpenTelemetry: classify, sample, redact, encrypt, forward.",
    )
    parser.add_argument("--version", action="version", version=f"errorgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the gateway", description="Run the gateway until SIGTERM/SIGINT.")
    p.add_argument("--config", metavar="FILE", help="config file (default: the embedded default config)")
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "validate-config", help="check a config file", description="Validate a config file fully."
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_validate_config)

    p = sub.add_parser("default-config", help="print the embedded default config")
    p.set_defaults(func=_print_default_config)

    p = sub.add_parser(
        "demo",
        help="run a gateway with simulated services and print what happened",
        description="Start a gateway in-process on free ports, send realistic traffic from a few fake "
        "services with the OpenTelemetry SDK, and summarise what went in and what came out.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    p.add_argument("--quiet", action="store_true", help="no progress indicator")
    p.set_defaults(func=_demo)

    for mod in _command_modules():
        add = getattr(mod, "add_commands", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, CommandError, FileNotFoundError, PermissionError, ValueError) as e:
        print(f"errorgate {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
