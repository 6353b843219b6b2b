"""Sinks and the deliverer: where pipelines' outputs go besides the engine's own tables."""
