"""Shapes and helpers shared by every stage: errors, time, JSON, secrets."""
