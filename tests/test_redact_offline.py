"""tldextract (used for e-mail validation) never touches the network and never logs.

Each check runs in a fresh interpreter with an empty cache directory and a socket guard
installed before anything is imported. A control run proves the guard does catch
tldextract's default behaviour (downloading the public suffix list)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GUARD = textwrap.dedent(
    """
    import json, logging, socket, sys
    attempts = []
    def _deny(*args, **kwargs):
        attempts.append(repr(args[:2])[:80])
        raise OSError("network disabled by test guard")
    socket.socket.connect = lambda self, *a, **k: _deny(*a)
    socket.socket.connect_ex = lambda self, *a, **k: _deny(*a)
    socket.create_connection = _deny
    socket.getaddrinfo = _deny
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(f"{record.name}:{record.levelname}")
    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.DEBUG)
    """
)


def run_guarded(body: str, tmp_path: Path) -> dict[str, list[str]]:
    code = GUARD + textwrap.dedent(body) + '\nprint(json.dumps({"attempts": attempts, "records": records}))\n'
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TLDEXTRACT_CACHE": str(tmp_path / "tld"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_engine_start_and_email_checks_use_no_network_and_log_nothing(tmp_path: Path) -> None:
    result = run_guarded(
        """
        from errorgate.processors.redact import RedactConfig
        from errorgate.processors.redaction.engine import AnalysisEngine
        config = RedactConfig(workers=0, ner=False)
        engine = AnalysisEngine(config.engine_settings(config.effective_policy()))
        found = engine.analyze_one("mail jane@example.co.uk and bob%40example.com", False)
        assert [f.entity_type for f in found] == ["EMAIL_ADDRESS", "EMAIL_ADDRESS"], found
        # Presidio's own EmailRecognizer goes through the same (patched) module-level extractor.
        from presidio_analyzer.predefined_recognizers import EmailRecognizer
        assert EmailRecognizer().analyze("x jane@example.com", ["EMAIL_ADDRESS"])
        """,
        tmp_path,
    )
    assert result["attempts"] == []
    assert not [r for r in result["records"] if r.startswith("tldextract")]
    assert not (tmp_path / "tld").exists()  # nothing cached either


def test_control_default_tldextract_does_try_the_network(tmp_path: Path) -> None:
    result = run_guarded(
        """
        import tldextract
        tldextract.TLDExtract()("jane@example.co.uk")
        """,
        tmp_path,
    )
    assert result["attempts"], "the guard must catch tldextract's default download attempt"
