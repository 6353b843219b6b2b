"""Collect: the Segment-compatible tracking API, validation and group commit."""
