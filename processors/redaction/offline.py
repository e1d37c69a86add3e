"""Keep tldextract (used by Presidio's EmailRecognizer) offline.

On a cold cache tldextract downloads the public suffix list and logs when it cannot; a
gateway must start without network and without noise. We replace the module-level
extractor with one that reads only the snapshot bundled in the wheel. Import this module
before anything calls ``tldextract.extract`` (``engine.py`` does so at import).
"""

from __future__ import annotations

import logging

import tldextract
import tldextract.tldextract as _impl

OFFLINE_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def install() -> None:
    """Point every tldextract entry point at the offline extractor (idempotent)."""
    _impl.TLD_EXTRACTOR = OFFLINE_EXTRACTOR
    # ``tldextract.extract`` looks the global up at call time, so replacing it is enough; the
    # explicit rebinding covers callers that imported ``extract`` itself.
    tldextract.extract = OFFLINE_EXTRACTOR  # type: ignore[assignment]
    # Its cache/fetch warnings would be noise in the gateway's own log.
    logging.getLogger("tldextract").setLevel(logging.ERROR)


install()
