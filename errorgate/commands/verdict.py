"""``errorgate verdict``: a deploy verdict from the running gateway, for any CI/CD pipeline.

Asks ``GET /api/v1/verdict`` on the gateway's metrics endpoint (``--endpoint``, or the one the
config names) and exits 0 on ``pass``, 1 on ``fail``, 2 on ``inconclusive``; 3 when there is no
verdict (bad input such as an unknown service or version, or no gateway answering), with a
one-line reason on stderr. Prints ``{"verdict", "evidence"}`` (``--format json``) or a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from errorgate.config import ConfigError, load_config, parse_duration

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}
NO_VERDICT = 3


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "verdict",
        help="judge a deploy: candidate version against baseline (exit 0 pass, 1 fail, 2 inconclusive)",
        description="Compare a candidate version of a service with its baseline, as the running "
        "gateway sees them. Exit 0 pass, 1 fail, 2 inconclusive, 3 no verdict (bad input, no gateway).",
    )
    p.add_argument("--service", required=True, help="service.name")
    p.add_argument("--candidate", required=True, metavar="V2", help="service.version of the new deploy")
    p.add_argument("--baseline", required=True, metavar="V1", help="service.version to compare with")
    p.add_argument(
        "--window", metavar="DURATION", help="how much recent traffic to judge (default: the gateway's, 10m)"
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--config", metavar="FILE", help="config whose service.telemetry.metrics.endpoint to ask"
    )
    where.add_argument(
        "--endpoint", metavar="URL", help="the gateway's metrics endpoint, e.g. http://127.0.0.1:9464"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway (default 10)")
    p.set_defaults(func=run)


def _base_url(args: argparse.Namespace) -> str:
    if args.endpoint:
        url: str = args.endpoint
    else:
        endpoint = load_config(args.config).service.telemetry.metrics.endpoint
        if not endpoint:
            where = args.config or "the embedded default config"
            raise ConfigError(f"service.telemetry.metrics.endpoint is empty in {where}: pass --endpoint")
        host, _, port = endpoint.rpartition(":")
        url = f"{host or '127.0.0.1'}:{port}"
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _ask(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            reason = e.reason
        raise LookupError(str(reason)) from None
    except (urllib.error.URLError, OSError) as e:
        raise LookupError(f"no gateway answering at {url.split('/api/')[0]}: {e}") from None


def run(args: argparse.Namespace) -> int:
    try:
        if args.window:
            parse_duration(args.window)  # malformed: say so here rather than as the gateway's 400
        params = {"service": args.service, "candidate": args.candidate, "baseline": args.baseline}
        if args.window:
            params["window"] = args.window
        body = _ask(f"{_base_url(args)}/api/v1/verdict?{urlencode(params)}", args.timeout)
    except (LookupError, ConfigError, ValueError) as e:
        print(f"errorgate verdict: {e}", file=sys.stderr)
        return NO_VERDICT
    verdict = str(body.get("verdict"))
    if args.format == "json":
        print(json.dumps(body, indent=2))
    else:
        evidence = body.get("evidence", {})
        print(f"{verdict}: {args.service} {args.candidate} vs {args.baseline}")
        for reason in evidence.get("reasons", []):
            print(f"  - {reason}")
    return EXIT_CODES.get(verdict, NO_VERDICT)
