"""What ``headwater deploy workflow`` writes: the project's GitHub Actions workflow.

One file, ``.github/workflows/headwater.yml``, for the whole path from a pull request to
production:

- on a pull request: ``headwater validate`` (no credentials), then
  ``headwater plan --env QA``, whose
  output is posted as a comment on the pull request (the previous one edited);
- on a push to the main branch: ``headwater apply --env QA``;
- on a version tag (``v*``): ``headwater apply --env PROD``.

A protected environment's metadata is migrated (``headwater --env ENV migrate``) before
its apply. Each job runs in the GitHub environment of the same name, so the secrets it
reads are that environment's: every ``"${NAME}"`` of the Headwater environment is
``${{ secrets.NAME }}``, Google Cloud is reached through Workload Identity Federation
(no key), and Cloud SQL through its Auth Proxy on ``/cloudsql``, so the store's URL is
the one Cloud Run uses. No value is written into the file. Two applies to one environment
never run at once (a concurrency group per environment that never cancels one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headwater.config.project import Project, load_project
from headwater.core.errors import ConfigError
from headwater.runtime.deploy import find_secrets, metadata_secrets, to_yaml

PATH = ".github/workflows/headwater.yml"
#: The Cloud SQL Auth Proxy's release the jobs download (cloud-sql-proxy v2).
CLOUD_SQL_PROXY = "v2.14.1"
#: GitHub environment variables (not secrets: they name things) the jobs read.
VARIABLES = ("GCP_WORKLOAD_IDENTITY_PROVIDER", "GCP_SERVICE_ACCOUNT", "CLOUDSQL_INSTANCE")


@dataclass(frozen=True)
class Stage:
    """One Headwater environment the workflow plans or applies."""

    name: str
    secrets: list[str]
    protected: bool
    #: With ``promote_from``: the names its apply also reads, to reach the metadata of
    #: the environment it promotes from (whose applies it checks).
    promoted: list[str] = field(default_factory=list)


def stage(project: Project) -> Stage:
    """The names and the protection of a loaded environment."""
    own = find_secrets(project).all
    promoted: list[str] = []
    if project.promote_from is not None:
        source = load_project(project.root, project.promote_from)
        reached = metadata_secrets(source)
        promoted = [n for n in reached if n not in own]
        shared = [n for n in reached if n in own]
        if shared:
            raise ConfigError(
                f"environment {project.environment!r} takes only commits applied to "
                f"{project.promote_from!r} (promote_from), so its apply job reads the "
                f"metadata of {project.promote_from!r}, which is reached by "
                f"{', '.join(shared)}, a name {project.environment!r} gives its own value",
                hint=f"give that of {project.promote_from!r} its own name (for example "
                f'url = "${{{project.promote_from.upper()}_{shared[0]}}}"), then run '
                "`headwater deploy workflow` again",
            )
    return Stage(str(project.environment), own, project.protected, promoted)


def workflow(qa: Stage, prod: Stage, *, branch: str = "main") -> dict[str, Any]:
    """The workflow as a mapping, in the order GitHub shows it.

    >>> w = workflow(Stage("qa", ["DATABASE_URL"], False), Stage("prod", [], True))
    >>> sorted(w["jobs"]), w["jobs"]["apply-prod"]["concurrency"]["group"]
    (['apply-prod', 'apply-qa', 'plan', 'validate'], 'headwater-apply-prod')
    """
    on_main = f"github.ref == 'refs/heads/{branch}'"
    return {
        "name": "headwater",
        "on": {
            "pull_request": {"branches": [branch]},
            "push": {"branches": [branch], "tags": ["v*"]},
        },
        "permissions": {"contents": "read"},
        "env": {"HEADWATER_LOG_FORMAT": "text"},
        "jobs": {
            "validate": {
                "if": "github.event_name == 'pull_request'",
                "runs-on": "ubuntu-latest",
                "steps": [*_install(), {"name": "headwater validate", "run": "headwater validate"}],
            },
            "plan": _plan(qa),
            "apply-qa": _apply(qa, f"github.event_name == 'push' && {on_main}"),
            "apply-prod": _apply(
                prod, "github.event_name == 'push' && startsWith(github.ref, 'refs/tags/v')"
            ),
        },
    }


def render(qa: Stage, prod: Stage, *, branch: str = "main") -> str:
    """The text of ``.github/workflows/headwater.yml``."""
    header = (
        "# Written by `headwater deploy workflow`: written again (overwritten) each time.\n"
        f"# GitHub environments {qa.name!r} and {prod.name!r} hold the secrets "
        f"({', '.join(_names(qa, prod)) or 'none'}) and the variables ({', '.join(VARIABLES)}).\n"
    )
    return header + to_yaml(workflow(qa, prod, branch=branch))


def _names(*stages: Stage) -> list[str]:
    return sorted({n for s in stages for n in s.secrets})


def _install() -> list[dict[str, Any]]:
    """The project, and Headwater from the image's lock."""
    return [
        {"uses": "actions/checkout@v4"},
        {
            "uses": "actions/setup-python@v5",
            "with": {
                "python-version": "3.11",
                "cache": "pip",
                "cache-dependency-path": "requirements.lock",
            },
        },
        {
            "name": "Install Headwater (the image's requirements.lock)",
            "run": "pip install --require-hashes -r requirements.lock",
        },
    ]


def _cloud() -> list[dict[str, Any]]:
    """Google Cloud credentials without a key, and the Cloud SQL instance on /cloudsql."""
    return [
        {
            "name": "Google Cloud credentials (Workload Identity Federation)",
            "uses": "google-github-actions/auth@v2",
            "with": {
                "workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
                "service_account": "${{ vars.GCP_SERVICE_ACCOUNT }}",
            },
        },
        {
            "name": "Cloud SQL Auth Proxy on /cloudsql",
            "env": {"CLOUDSQL_INSTANCE": "${{ vars.CLOUDSQL_INSTANCE }}"},
            "run": _PROXY,
        },
    ]


_PROXY = f"""\
curl -sSfLo cloud-sql-proxy \\
  https://storage.googleapis.com/cloud-sql-connectors/cloud-sql-proxy/{CLOUD_SQL_PROXY}/cloud-sql-proxy.linux.amd64
chmod +x cloud-sql-proxy
sudo mkdir -p /cloudsql && sudo chown "$(id -u)" /cloudsql
# One instance, or several separated by spaces (an apply that reads another's metadata).
# shellcheck disable=SC2086
./cloud-sql-proxy --unix-socket /cloudsql $CLOUDSQL_INSTANCE > cloud-sql-proxy.log 2>&1 &
for _ in $(seq 30); do
  open=1
  for instance in $CLOUDSQL_INSTANCE; do
    [ -S "/cloudsql/$instance/.s.PGSQL.5432" ] || open=0
  done
  [ "$open" -eq 1 ] && exit 0
  sleep 1
done
echo "::error::the Cloud SQL Auth Proxy did not open /cloudsql/$CLOUDSQL_INSTANCE in 30 s"
exit 1
"""


def _secrets(names: list[str]) -> dict[str, str]:
    return {name: "${{ secrets.%s }}" % name for name in names}  # noqa: UP031


def _plan(qa: Stage) -> dict[str, Any]:
    # Exit codes of plan: 0 nothing breaking, 3 something breaking (shown, not a failure
    # of the check: the reviewer decides), 1 an error (the check fails).
    comment = f"""\
set +e
headwater plan --env {qa.name} > plan.txt 2>&1
code=$?
set -e
{{
  echo "#### \\`headwater plan --env {qa.name}\\` at ${{GITHUB_SHA::7}}"
  if [ "$code" -eq 3 ]; then echo "**Breaking changes**: applying this plan is breaking."; fi
  echo '```text'
  cat plan.txt
  echo '```'
}} > comment.md
gh pr comment "$PR" --edit-last --body-file comment.md \\
  || gh pr comment "$PR" --body-file comment.md
if [ "$code" -eq 3 ]; then echo "::warning::the plan for {qa.name} is breaking"; fi
cat plan.txt
[ "$code" -ne 1 ]
"""
    return {
        "needs": "validate",
        "runs-on": "ubuntu-latest",
        "environment": qa.name,
        "permissions": {"contents": "read", "id-token": "write", "pull-requests": "write"},
        "concurrency": {
            "group": "headwater-plan-${{ github.event.pull_request.number }}",
            "cancel-in-progress": True,
        },
        "steps": [
            *_install(),
            *_cloud(),
            {
                "name": f"headwater plan --env {qa.name}, posted on the pull request",
                "env": {
                    **_secrets(qa.secrets),
                    "GH_TOKEN": "${{ github.token }}",
                    "PR": "${{ github.event.pull_request.number }}",
                },
                "run": comment,
            },
        ],
    }


def _apply(env: Stage, when: str) -> dict[str, Any]:
    steps = [*_install(), *_cloud()]
    if env.protected:
        steps.append(
            {
                "name": f"headwater --env {env.name} migrate (a protected environment)",
                "env": _secrets(env.secrets),
                "run": f"headwater --env {env.name} migrate",
            }
        )
    steps.append(
        {
            "name": f"headwater apply --env {env.name}",
            "env": _secrets([*env.secrets, *env.promoted]),
            "run": f"headwater apply --env {env.name}",
        }
    )
    return {
        "if": when,
        "runs-on": "ubuntu-latest",
        "environment": env.name,
        "permissions": {"contents": "read", "id-token": "write"},
        # One apply to an environment at a time; a later one waits rather than cancelling.
        "concurrency": {"group": f"headwater-apply-{env.name}", "cancel-in-progress": False},
        "steps": steps,
    }
