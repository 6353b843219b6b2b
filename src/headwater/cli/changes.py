"""Changing an environment: ``headwater plan`` and ``headwater apply``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from headwater.cli.context import operation, options
from headwater.cli.output import console
from headwater.core.errors import ConfigError

#: ``plan``'s exit code when something is breaking (1 is an error, 2 a usage error).
BREAKING = 3

EnvOption = Annotated[
    str | None,
    typer.Option("--env", "-e", help="The environment (default: headwater --env)."),
]


def _choose(environment: str | None) -> None:
    """``plan --env qa`` says what ``headwater --env qa plan`` says."""
    if environment is not None:
        options.environment = environment


def plan(
    environment: EnvOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show what applying the working tree to the environment would change.

    Compared with what the environment applied last: pipelines added, changed or
    removed, whether each change is breaking, the intervals computed again and what
    that reads, the consumers and sinks a breaking change reaches, sources, consumers
    and sinks added or removed, and metadata migrations pending. Nothing is changed.
    Exits 3 when a change is breaking, so CI can ask for a review.

    Example: headwater plan --env qa
    """
    _choose(environment)
    found = operation("plan", {}, as_is=True)
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2, sort_keys=True) + "\n")
    else:
        show_plan(found)
    if found["breaking"]:
        raise typer.Exit(BREAKING)


def apply(
    environment: EnvOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before a breaking change.")
    ] = False,
) -> None:
    """Carry out the plan in the environment and record it (who, when, the git commit).

    Tables computed again are built beside the live ones and swapped in when whole:
    consumers, sinks and the scheduler read the old version until then. In a
    protected environment the git tree must be clean; with promote_from, its commit
    must have been applied there first. Run again after a failure or a crash: it goes
    on from where it stopped. Asks before a breaking change when run in a terminal.

    Example: headwater apply --env prod
    """
    _choose(environment)
    from headwater.runtime import git
    from headwater.runtime.apply import check_promotion

    project = options.project()
    tree = git.tree(project.root)
    where = f"environment {project.environment!r}" if project.environment else "this environment"
    if project.protected:
        if tree.commit is None:
            raise ConfigError(
                f"{where} is protected: it is applied from a commit of a git repository, "
                f"and {project.root} is not in one (or git is not installed)",
                hint="commit the project to git and apply from its checkout",
            )
        if tree.dirty:
            listed = ", ".join(tree.changes[:8]) + (" …" if len(tree.changes) > 8 else "")
            raise ConfigError(
                f"{where} is protected and the git tree has changes not committed: {listed}",
                hint="commit them (and apply them to the environments before this one), or "
                "stash them, then apply again",
            )
    check_promotion(project, tree.commit, tree.changes)
    found = operation("plan", {}, as_is=True)
    show_plan(found)
    if found["migrations"] and not project.protected:
        console.print("The metadata database is migrated first (the environment is not protected).")
    if found["breaking"] and not yes and sys.stdin.isatty():
        typer.confirm("Apply, breaking what is listed above?", abort=True)
    args: dict[str, Any] = {
        "applied_by": git.who(project.root),
        "commit": tree.commit,
        "dirty": tree.dirty,
    }
    done = operation("apply", args, progress=True)["result"]
    for name in done["resumed"]:
        console.print(f"Finished {escape(name)}, left half-applied by an earlier apply.")
    for name in done["swapped"]:
        console.print(
            f"Swapped in {escape(name)} ({done['built'].get(name, 0)} intervals run).",
            highlight=False,
        )
    for name in done["dropped"]:
        console.print(f"Dropped {escape(name)}.", highlight=False)
    commit = (tree.commit[:12] if tree.commit else "no git commit") + (
        " with changes" if tree.dirty else ""
    )
    console.print(
        f"Applied to {escape(where)}: apply {done['apply_id']}, {escape(commit)}, "
        f"by {escape(args['applied_by'])}.",
        highlight=False,
    )


def show_plan(found: dict[str, Any]) -> None:
    """The plan as a person reads it."""
    where = f"environment {found['environment']!r}" if found["environment"] else "this environment"
    baseline = (
        "what it has built (no apply is recorded yet)"
        if found["first_apply"]
        else "what it applied last"
    )
    console.print(
        f"Plan for {escape(where)} ({escape(found['engine'])}), against {baseline}:",
        highlight=False,
    )
    recompute = {r["pipeline"]: r for r in found["recompute"]}
    affected: dict[str, list[dict[str, Any]]] = {}
    for hit in found["affected"]:
        affected.setdefault(hit["dataset"], []).append(hit)
    marks = {"added": "+", "removed": "-", "changed": "~", "metadata": "*"}
    for change in found["changes"]:
        label = "[red]breaking[/red]" if change["breaking"] else "not breaking"
        console.print(
            f"  {marks[change['kind']]} {escape(change['name'])}: {change['kind']}, {label}: "
            f"{escape('; '.join(change['reasons']))}",
            highlight=False,
        )
        for hit in affected.get(change["name"], []):
            console.print(
                f"      reaches {escape(hit['who'])}: {escape(hit['why'])}", highlight=False
            )
        if change["name"] in recompute:
            console.print(
                f"      {_recompute_line(recompute.pop(change['name']))}", highlight=False
            )
    for name, again in recompute.items():
        console.print(
            f"  ^ {escape(name)}: computed again, it {escape(again['because'])}", highlight=False
        )
        console.print(f"      {_recompute_line(again)}", highlight=False)
    for thing in found["objects"]:
        mark = {"added": "+", "removed": "-", "changed": "~"}[thing["change"]]
        detail = f" ({thing['detail']})" if thing["detail"] else ""
        console.print(
            f"  {mark} {thing['kind']} {escape(thing['name'])}: {thing['change']}{escape(detail)}",
            highlight=False,
        )
    for migration in found["migrations"]:
        console.print(f"  metadata migration pending: {escape(migration)}", highlight=False)
    if not (found["changes"] or found["objects"] or found["migrations"]):
        console.print("  nothing to change.")
        return
    breaking = sum(1 for c in found["changes"] if c["breaking"])
    console.print(
        f"{len(found['changes'])} pipeline changes, {breaking} breaking"
        + (" (exit code 3)." if breaking else "."),
        highlight=False,
    )


def _recompute_line(again: dict[str, Any]) -> str:
    if not again["intervals"]:
        return "nothing to compute yet (no whole interval since its first input)"
    span = f"{again['start'][:16]} .. {again['end'][:16]}"
    cost = []
    if again["bytes"] is not None:
        cost.append(f"bills ~{again['bytes']:,} bytes (${again['dollars']:.4f}) on BigQuery")
    if again["rows"] is not None:
        cost.append(f"reads ~{again['rows']:,} rows")
    read = f", {', '.join(cost)}" if cost else ""
    return escape(
        f"recompute {again['intervals']} intervals ({span}){read}, built beside the live table"
    )
