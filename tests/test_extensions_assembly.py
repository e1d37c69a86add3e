"""Shared services as extensions (keyring, catalog) and trace assembly configured under
``service.assembly``: what a config says reaches the components, old configs keep working,
and contradictions are errors that name both keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from errorgate.config import ConfigError, parse_config
from errorgate.extensions.catalog import CatalogConfig
from errorgate.extensions.keyring import KeyringConfig
from errorgate.processors.classify import Classify
from errorgate.processors.redact import RedactProcessor
from errorgate.service.gateway import Gateway
from tests.support.gateway import gateway_yaml

EXPORTER = "  debug: {verbosity: basic}"


def _yaml(tmp_path: Path, processors: str, pipeline: str, service: str = "", top: str = "") -> str:
    text = gateway_yaml(
        tmp_path,
        exporter=EXPORTER,
        processors=processors,
        pipeline_processors=pipeline,
        metrics_processors="[]",
        service_extra="  processor_worker: {enabled: false}\n" + service,
        exporter_id="debug",
    )
    return text + top


def _gateway(text: str) -> Gateway:
    return Gateway(parse_config(text, "<test>"))


def test_assembly_window_is_configurable_without_sample(tmp_path: Path) -> None:
    """Before service.assembly, a pipeline with classify but no sample had a 10 s window no key changed."""
    text = _yaml(
        tmp_path, "{classify: {}}", "[classify]", service="  assembly: {decision_wait: 2s, num_traces: 7}\n"
    )
    gateway = _gateway(text)
    try:
        [assembler] = gateway.builder.assemblers
        assert assembler.config.decision_wait == 2.0 and assembler.config.num_traces == 7
    finally:
        gateway.stop(timeout=5)


def test_sample_decision_wait_still_sets_the_window(tmp_path: Path) -> None:
    text = _yaml(tmp_path, "{classify: {}, sample: {decision_wait: 3s}}", "[classify, sample]")
    config = parse_config(text, "<test>")
    assert config.assembly_for("traces").decision_wait == 3.0
    assert config.assembly_for("logs").decision_wait == 3.0  # the log hold waits as long


def test_assembly_set_in_two_places_is_an_error_naming_both(tmp_path: Path) -> None:
    text = _yaml(
        tmp_path,
        "{sample: {decision_wait: 3s}}",
        "[sample]",
        service="  assembly: {decision_wait: 2s}\n",
    )
    with pytest.raises(
        ConfigError, match=r"processors\.sample\.decision_wait: 3\.0 conflicts with service\.assembly"
    ):
        parse_config(text, "<test>")
    same = _yaml(
        tmp_path, "{sample: {decision_wait: 2s}}", "[sample]", service="  assembly: {decision_wait: 2s}\n"
    )
    assert parse_config(same, "<test>").assembly_for("traces").decision_wait == 2.0


def test_encrypt_keys_imply_the_keyring_extension(tmp_path: Path) -> None:
    keys = tmp_path / "ring"
    text = _yaml(tmp_path, f"{{encrypt: {{keyring: {keys}}}}}", "[encrypt]")
    config = parse_config(text, "<test>")
    [(extension_id, settings)] = config.enabled_extensions().items()
    assert extension_id == "keyring" and isinstance(settings, KeyringConfig)
    assert settings.keyring == str(keys)


def test_a_declared_keyring_serves_redact_without_encrypt(tmp_path: Path) -> None:
    """redact's keyed actions need a keyring; an extension provides it (before: only an encrypt section did)."""
    processors = "{redact: {workers: 0, entities: {EMAIL_ADDRESS: {action: token}}}}"
    no_keyring = _yaml(tmp_path, processors, "[redact]")
    with pytest.raises(ConfigError, match=r"EMAIL_ADDRESS\.action: 'token' needs a keyring"):
        _gateway(no_keyring)
    text = _yaml(
        tmp_path,
        processors,
        "[redact]",
        service="  extensions: [keyring]\n",
        top=f"extensions:\n  keyring: {{keyring: {tmp_path / 'keys'}, master_key_file: {tmp_path / 'master.key'}}}\n",
    )
    gateway = _gateway(text)
    try:
        [redact] = gateway.builder.processors.values()
        assert isinstance(redact, RedactProcessor)
        assert (tmp_path / "keys" / "keyring.json").exists()
        # The same keyring encrypts at rest: the dead-letter store has a codec.
        assert gateway.extensions.at_rest_codec() is not None
    finally:
        gateway.stop(timeout=5)


def test_catalog_extension_reaches_classify(tmp_path: Path) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text("services:\n  ledger: {owner: finance, tier: 1, slo: 0.999}\n")
    text = _yaml(
        tmp_path,
        "{classify: {}}",
        "[classify]",
        service="  extensions: [catalog]\n",
        top=f"extensions:\n  catalog: {{path: {catalog}}}\n",
    )
    config = parse_config(text, "<test>")
    assert isinstance(config.extensions["catalog"], CatalogConfig)
    gateway = _gateway(text)
    try:
        classify = next(p for p in gateway.builder.processors.values() if isinstance(p, Classify))
        assert classify.catalog.lookup("ledger").tier == 1
        assert not classify.catalog.is_known("checkout")  # the bundled catalog was not loaded
    finally:
        gateway.stop(timeout=5)


@pytest.mark.parametrize(
    ("top", "service", "message"),
    [
        (
            "",
            "  extensions: [keyring]\n",
            r"service\.extensions\[0\]: 'keyring' is not defined under extensions:",
        ),
        (
            "extensions:\n  vault: {}\n",
            "",
            r"extensions\.vault: unknown extension type 'vault' \(known: catalog, keyring, redis\)",
        ),
        (
            "extensions:\n  catalog: {paht: x}\n",
            "  extensions: [catalog]\n",
            r"extensions\.catalog\.paht: unknown key",
        ),
    ],
)
def test_extension_config_errors_name_the_key(tmp_path: Path, top: str, service: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_yaml(tmp_path, "{}", "[]", service=service, top=top), "<test>")
