"""``errorgate`` command line. Core commands live here; areas add theirs as modules in
``errorgate.commands`` exposing ``add_commands(subparsers)``."""

from __future__ import annotations

import argparse
import gc
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from errorgate import __version__
from errorgate.config import ConfigError, load_config


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit."""


def _serve(args: argparse.Namespace) -> int:
    from errorgate.logs import configure_logging
    from errorgate.service.gateway import Gateway
    from errorgate.service.memory import limit_malloc_arenas

    limit_malloc_arenas()
    config = load_config(args.config)
    logs = config.service.telemetry.logs
    configure_logging(logs.level, logs.encoding)
    gateway = Gateway(config)
    gateway.start()
    _tune_gc()
    return gateway.run_until_signalled()


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

    import errorgate.commands as commands

    for module in pkgutil.iter_modules(commands.__path__):
        if module.name.startswith("_"):
            continue
        mod = importlib.import_module(f"errorgate.commands.{module.name}")
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
