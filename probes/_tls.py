"""TLS settings shared by the kinds that speak TLS (http, redis)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from stackprobe.secrets import resolve_path

# Where a config load keeps the contexts it built while validating (`Config.built`), so the
# files are read once per load; the `http_client` resource takes them from there.
BUILT_CONTEXTS = "tls_contexts"


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted; stackprobe needs an unencrypted key file")


class TLSConfig(BaseModel):
    """Verification is on by default; `ca_file` trusts a private CA (instead of the system's,
    as blackbox_exporter's does) rather than switching verification off. The files are loaded
    at config load, so a bad one is a config error, and again on every reload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _relative_to_config(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r} does not exist or is not a file")
        cache = (info.context or {}).get("built", {})
        built: dict[TLSConfig, Any] = cache.setdefault(BUILT_CONTEXTS, {})
        if self != TLSConfig.model_construct() and self not in built:
            try:
                built[self] = self.ssl_context()
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ValueError(f"cannot use these TLS files: {exc}") from None
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """A client context; raises ssl.SSLError or OSError when the files are unusable."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file), _no_passphrase)
        return context
