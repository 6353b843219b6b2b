"""Settings of the read API: ``[api]`` and ``[consumers.<name>]``."""

from __future__ import annotations

import msgspec


class ConsumerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A service that reads datasets through the API."""

    token: str
    """``"sha256:<hex>"`` (as ``headwater consumers add`` writes it) or ``"${ENV_NAME}"``."""

    datasets: list[str] = msgspec.field(default_factory=list)
    """The datasets (pipeline outputs) this consumer may read."""


class AdminSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A person or service that administers Headwater: the dashboard, erasures."""

    token: str
    """``"sha256:<hex>"`` (as ``headwater admins add`` writes it) or ``"${ENV_NAME}"``."""


class ApiSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[api]`` table."""

    page_size: int = 100
    """Rows per page when the request does not say."""

    max_page_size: int = 1000
    """Most rows one request may ask for."""
