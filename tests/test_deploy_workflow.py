"""``headwater deploy workflow``: the GitHub Actions workflow, read as GitHub would read it.

No GitHub runs here. The file is parsed as YAML and checked for its triggers, jobs,
commands, permissions and concurrency; every ``run:`` script is checked by ``bash -n``;
the plan step's script runs under bash with stand-ins for ``headwater plan`` (which lives
on another branch) and ``gh`` (not installed, and it would post to GitHub), to check what
each of plan's exit codes does. Fake secret values sit in the command's environment and
the file is searched for them.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli

FAKE = {
    "DATABASE_URL": "postgresql://hw:fake-store-password-51@/hw?host=/cloudsql/x",
    "METADATA_URL": "postgresql://hw:fake-metadata-password-52@/hw",
    "HOOK_SECRET": "fake-hook-secret-53",
    "WEB_WRITE_KEY": "hw_wk_fake-write-key-54",
}

PROJECT = """
[sources.web]
write_key = "${WEB_WRITE_KEY}"

[environments.qa.store]
engine = "postgres"
url = "${DATABASE_URL}"

[environments.prod]
protected = true
metadata_url = "${METADATA_URL}"

[environments.prod.store]
engine = "postgres"
url = "${DATABASE_URL}"

[environments.prod.sinks.hook]
type = "webhook"
url = "https://hooks.example.com/in"
secret = "${HOOK_SECRET}"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, str]:
    root = tmp_path_factory.mktemp("workflow")
    (root / "headwater.toml").write_text(PROJECT, encoding="utf-8")
    (root / "pipelines").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE.items():
            mp.setenv(name, value)
        result = run_cli(root, "deploy", "workflow")
    text = (root / ".github" / "workflows" / "headwater.yml").read_text(encoding="utf-8")
    return text, yaml.safe_load(text), result.stdout


def _runs(job: Any) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_triggers_pull_requests_main_and_version_tags(rendered: tuple[str, Any, str]) -> None:
    _, doc, _ = rendered
    # PyYAML reads the key `on` as true unless quoted; GitHub reads it either way.
    assert "on" in doc
    assert doc["on"] == {
        "pull_request": {"branches": ["main"]},
        "push": {"branches": ["main"], "tags": ["v*"]},
    }
    jobs = doc["jobs"]
    assert list(jobs) == ["validate", "plan", "apply-qa", "apply-prod"]
    assert jobs["validate"]["if"] == "github.event_name == 'pull_request'"
    assert jobs["plan"]["needs"] == "validate"
    assert "refs/heads/main" in jobs["apply-qa"]["if"]
    assert "'refs/tags/v'" in jobs["apply-prod"]["if"]
    assert "push" in jobs["apply-qa"]["if"]
    assert "push" in jobs["apply-prod"]["if"]


def test_each_job_runs_its_commands_in_order(rendered: tuple[str, Any, str]) -> None:
    _, doc, _ = rendered
    jobs = doc["jobs"]
    assert "headwater validate" in _runs(jobs["validate"])
    assert "headwater plan --env qa > plan.txt" in _runs(jobs["plan"])[-1]
    assert 'gh pr comment "$PR" --edit-last --body-file comment.md' in _runs(jobs["plan"])[-1]
    assert _runs(jobs["apply-qa"])[-1] == "headwater apply --env qa"
    # qa is not protected: it migrates as it opens; prod migrates first.
    assert not any("migrate" in r for r in _runs(jobs["apply-qa"]))
    prod = _runs(jobs["apply-prod"])
    assert prod[-2:] == ["headwater --env prod migrate", "headwater apply --env prod"]
    for job in jobs.values():
        runs = _runs(job)
        assert "pip install --require-hashes -r requirements.lock" in runs
        for script in runs:
            subprocess.run(["bash", "-n", "-c", script], check=True)
            # Values from GitHub reach scripts as environment variables, never pasted in.
            assert "${{" not in script


def test_permissions_are_the_least_each_job_needs(rendered: tuple[str, Any, str]) -> None:
    _, doc, _ = rendered
    assert doc["permissions"] == {"contents": "read"}
    jobs = doc["jobs"]
    assert "permissions" not in jobs["validate"]
    assert jobs["plan"]["permissions"] == {
        "contents": "read", "id-token": "write", "pull-requests": "write",
    }  # fmt: skip
    for name in ("apply-qa", "apply-prod"):
        assert jobs[name]["permissions"] == {"contents": "read", "id-token": "write"}


def test_two_applies_to_one_environment_never_run_at_once(rendered: tuple[str, Any, str]) -> None:
    _, doc, _ = rendered
    jobs = doc["jobs"]
    groups = {n: jobs[n]["concurrency"] for n in ("apply-qa", "apply-prod")}
    assert groups["apply-qa"] == {"group": "headwater-apply-qa", "cancel-in-progress": False}
    assert groups["apply-prod"] == {"group": "headwater-apply-prod", "cancel-in-progress": False}
    assert jobs["apply-qa"]["environment"] == "qa"
    assert jobs["apply-prod"]["environment"] == "prod"


def test_credentials_come_from_github_and_no_value_is_written(
    rendered: tuple[str, Any, str],
) -> None:
    text, doc, output = rendered
    for name, value in FAKE.items():
        secret = value.split(":")[-1].split("@")[0] if "://" in value else value
        assert secret not in text, f"{name}'s value is in the workflow"
    referenced = set(re.findall(r"secrets\.([A-Z_]+)", text))
    assert referenced == set(FAKE)
    jobs = doc["jobs"]
    for job in jobs.values():
        for step in job["steps"]:
            for key, value in step.get("env", {}).items():
                assert isinstance(value, str)
                assert re.fullmatch(r"\$\{\{ [a-z.\[\]_A-Z]+ \}\}", value), (key, value)
    prod_env = jobs["apply-prod"]["steps"][-1]["env"]
    assert prod_env["HOOK_SECRET"] == "${{ secrets.HOOK_SECRET }}"
    qa_env = jobs["apply-qa"]["steps"][-1]["env"]
    assert "HOOK_SECRET" not in qa_env
    assert "DATABASE_URL" in qa_env
    auth = [s for j in jobs.values() for s in j["steps"] if "google-github-actions/auth" in
            s.get("uses", "")]  # fmt: skip
    assert len(auth) == 3
    assert all("credentials_json" not in s["with"] for s in auth)
    assert all(s["with"]["workload_identity_provider"].startswith("${{ vars.") for s in auth)
    assert "secrets DATABASE_URL, HOOK_SECRET, METADATA_URL, WEB_WRITE_KEY" in output


def _stand_in(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(("code", "passes", "breaking"), [(0, True, False), (3, True, True),
                                                          (1, False, False)])  # fmt: skip
def test_the_plan_step_posts_the_plan_and_fails_only_on_an_error(
    rendered: tuple[str, Any, str], tmp_path: Path, code: int, passes: bool, breaking: bool
) -> None:
    _, doc, _ = rendered
    script = _runs(doc["jobs"]["plan"])[-1]
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _stand_in(bin_, "headwater", f'echo "plan of $*"\nexit {code}\n')
    # The first call edits the last comment and finds none; the second creates one.
    _stand_in(bin_, "gh", f'echo "$*" >> {tmp_path}/gh.calls\ncp comment.md {tmp_path}/posted\n'
              '[[ "$*" != *--edit-last* ]]\n')  # fmt: skip
    env = {"PATH": f"{bin_}:{os.environ['PATH']}", "PR": "7", "GITHUB_SHA": "0123456789abcdef"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (done.returncode == 0) is passes, done.stderr
    calls = (tmp_path / "gh.calls").read_text().splitlines()
    assert calls == ["pr comment 7 --edit-last --body-file comment.md",
                     "pr comment 7 --body-file comment.md"]  # fmt: skip
    posted = (tmp_path / "posted").read_text()
    assert posted.startswith("#### `headwater plan --env qa` at 0123456\n")
    assert "plan of plan --env qa" in posted
    assert ("Breaking changes" in posted) is breaking
    assert ("::warning::" in done.stdout) is breaking


def test_an_environment_that_is_not_declared_is_named_with_its_flag(tmp_path: Path) -> None:
    (tmp_path / "headwater.toml").write_text(PROJECT, encoding="utf-8")
    (tmp_path / "pipelines").mkdir()
    result = run_cli(tmp_path, "deploy", "workflow", "--qa", "staging", check=False)
    assert result.returncode == 1
    assert "there is no environment 'staging' to plan and apply" in result.stderr
    assert "or name another environment with --qa NAME" in result.stderr
    assert not (tmp_path / ".github").exists()


PROMOTED = """
[environments.qa.store]
engine = "postgres"
url = "${QA_DATABASE_URL}"

[environments.prod]
protected = true
promote_from = "qa"

[environments.prod.store]
engine = "postgres"
url = "${DATABASE_URL}"
"""


def test_prods_apply_job_reads_the_metadata_it_promotes_from(tmp_path: Path) -> None:
    """promote_from makes `apply --env prod` read QA's metadata: the job has QA's name for
    it; a QA reached by a name prod gives its own value is refused, with the fix."""
    (tmp_path / "headwater.toml").write_text(PROMOTED, encoding="utf-8")
    (tmp_path / "pipelines").mkdir()
    fake = {"QA_DATABASE_URL": FAKE["DATABASE_URL"], "DATABASE_URL": FAKE["DATABASE_URL"]}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in fake.items():
            mp.setenv(name, value)
        result = run_cli(tmp_path, "deploy", "workflow")
        doc = yaml.safe_load((tmp_path / ".github/workflows/headwater.yml").read_text("utf-8"))
        apply = doc["jobs"]["apply-prod"]["steps"][-1]
        assert apply["run"] == "headwater apply --env prod"
        assert apply["env"] == {
            "DATABASE_URL": "${{ secrets.DATABASE_URL }}",
            "QA_DATABASE_URL": "${{ secrets.QA_DATABASE_URL }}",
        }
        assert "GitHub environment prod: secrets DATABASE_URL, QA_DATABASE_URL" in result.stdout

        shared = PROMOTED.replace("${QA_DATABASE_URL}", "${DATABASE_URL}")
        (tmp_path / "headwater.toml").write_text(shared, encoding="utf-8")
        refused = run_cli(tmp_path, "deploy", "workflow", check=False)
    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "reads the metadata of 'qa', which is reached by DATABASE_URL" in said, said
    assert "QA_DATABASE_URL" in said, said
