"""The engines' session fixtures (``pg_server``) for the conformance corpus."""

from tests.engines.conftest import pg_server

__all__ = ["pg_server"]
