"""Headwater: from a service's log line to the service that needs the answer."""

from __future__ import annotations

__version__ = "0.1.0"
