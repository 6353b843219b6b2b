"""What a day of traffic bills on BigQuery, before it is paid.

A model of BigQuery's on-demand pricing, as it applies to the jobs Headwater
sends: queries bill the bytes they scan at $6.25 per TiB, and at least 10 MB
for each table a query references; load jobs cost nothing but count against
quotas (100,000 per project and 1,500 per table per day). ``headwater status``
prints it for the current traffic, ``docs/engines.md`` tabulates it, and
``benchmarks/engines.py`` checks it against the jobs a recording client saw.

>>> direct = direct_path(events_per_day=86_400, commits_per_day=86_400)
>>> direct.queries, direct.load_jobs, round(direct.dollars, 2)
(172800, 86400, 20.6)
>>> offload(intervals_per_day=24).queries, offload(intervals_per_day=24).load_jobs
(0, 48)
"""

from __future__ import annotations

from dataclasses import dataclass

#: BigQuery on-demand analysis, US multi-region, per TiB billed.
USD_PER_TIB = 6.25
#: BigQuery bills at least this much for each table a query references.
MIN_BYTES_PER_TABLE = 10 * 1024**2
TIB = 1024**4
#: Quotas a day of jobs must stay under.
LOAD_JOBS_PER_PROJECT = 100_000
LOAD_JOBS_PER_TABLE = 1_500


@dataclass(frozen=True, slots=True)
class DailyCost:
    """What one part of a setup sends BigQuery in a day."""

    what: str
    queries: int
    load_jobs: int
    bytes_billed: int

    @property
    def dollars(self) -> float:
        return self.bytes_billed / TIB * USD_PER_TIB

    def __add__(self, other: DailyCost) -> DailyCost:
        return DailyCost(
            f"{self.what} + {other.what}",
            self.queries + other.queries,
            self.load_jobs + other.load_jobs,
            self.bytes_billed + other.bytes_billed,
        )


def direct_path(
    events_per_day: int, commits_per_day: int, failed_commits_per_day: int = 0
) -> DailyCost:
    """Collectors committing straight into BigQuery: per commit a load job into a staging
    table, a SELECT joining it to ``events`` and a MERGE into ``events`` (each referencing
    two tables, so at least 20 MB each), and a load job into ``failed_events`` when the
    commit had failures. A commit holds at least one event."""
    commits = min(events_per_day, commits_per_day)
    return DailyCost(
        "direct",
        queries=2 * commits,
        load_jobs=commits + min(commits, failed_commits_per_day),
        bytes_billed=2 * commits * 2 * MIN_BYTES_PER_TABLE,
    )


def offload(intervals_per_day: int, tables: int = 2) -> DailyCost:
    """The offload: one load job per table and interval (fewer when a table had no rows in
    one), and no query."""
    return DailyCost("offload", queries=0, load_jobs=intervals_per_day * tables, bytes_billed=0)


#: Tables the statements that publish one interval reference: CREATE TABLE IF NOT EXISTS
#: (the staging table), then DELETE and INSERT (target and staging) with the fence's check
#: and MERGE (the fences table).
PUBLISH_TABLE_REFERENCES = 6


def pipeline_runs(name: str, runs_per_day: int, bytes_per_run: int) -> DailyCost:
    """A SQL pipeline on BigQuery: per interval its query (``bytes_per_run`` by a dry run,
    at least 10 MB), a load job into a staging table, and the statements that publish it
    (at least 10 MB for each table they reference; more when the interval's partition of the
    output is larger)."""
    per_run = max(bytes_per_run, MIN_BYTES_PER_TABLE)
    publish = PUBLISH_TABLE_REFERENCES * MIN_BYTES_PER_TABLE
    return DailyCost(
        name,
        queries=3 * runs_per_day,
        load_jobs=runs_per_day,
        bytes_billed=runs_per_day * (per_run + publish),
    )
