"""The ``headwater`` command: one verb per job."""
