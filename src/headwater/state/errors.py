"""Errors of the shared run state: leases held by others, and leases lost."""

from __future__ import annotations

from headwater.core.errors import TransientError


class LeaseHeld(TransientError):
    """Another holder has the lease now: a run of the same pipeline, or a delivery to the
    same sink, is under way; try again when it ends."""

    def __init__(self, name: str, reason: str = "another run holds it; try again when it ends"):
        self.name = name
        super().__init__(f"{_label(name)}: {reason}")


class LeaseLost(TransientError):
    """This holder's lease expired and another took it over: what it computed is not
    published and what it delivered is not recorded, so that at most one holder wins."""

    def __init__(self, name: str, token: int) -> None:
        self.name = name
        self.token = token
        super().__init__(
            f"{_label(name)}: lost its lease to another process (it stalled for longer than "
            "the lease lasts); its work was not published",
            hint="nothing to do: the other holder does the work; if processes stall this "
            "long, raise [pipelines] lease_seconds",
        )


def _label(name: str) -> str:
    """``deliver:daily:crm`` -> ``delivery of daily to crm``; a pipeline's name as it is."""
    kind, _, rest = name.partition(":")
    if kind == "offload":
        return f"the offload into the {rest}"
    if kind == "deliver" and ":" in rest:
        pipeline, _, sink = rest.partition(":")
        return f"delivery of {pipeline} to {sink}"
    return f"pipeline {name}"
