"""Serve: the read API for internal services, one bearer token per consumer."""
