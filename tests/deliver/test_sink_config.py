"""``[sinks.NAME]`` tables and the sinks a pipeline names: every mistake is one clear error.

Through :func:`headwater.config.project.load_project` and through the CLI as a
user runs it. Each error must name the problem (the sink, the key, the value
or the pipeline file) and the fix; a secret written in plain text is refused
and not echoed back. Each check has a control: the corrected file loads.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import msgspec
import pytest

from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.deliver.settings import FilesSink, PostgresSink, WebhookSink
from tests.conftest import Project, run_cli

SINK_TYPES = ("files", "postgres", "webhook")
SETTINGS: dict[str, type[msgspec.Struct]] = {
    "files": FilesSink,
    "postgres": PostgresSink,
    "webhook": WebhookSink,
}
#: A minimal valid table of each type (the URL and secret are environment references).
VALID = {
    "files": 'type = "files"\nurl = "exports"\n',
    "postgres": 'type = "postgres"\nurl = "${HW_TEST_PG_URL}"\n',
    "webhook": (
        'type = "webhook"\nurl = "https://hooks.example.com/x"\nsecret = "${HW_TEST_SECRET}"\n'
    ),
}


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load the top-level settings, whatever the shell running the tests exports."""
    monkeypatch.delenv("HEADWATER_ENV", raising=False)


def _sink(project: Project, name: str, body: str) -> None:
    """Append ``[sinks.NAME]`` with ``body`` to headwater.toml (which has [sinks.files])."""
    project.configure(f"[sinks.{name}]\n{body}")


def _config_error(project: Project) -> ConfigError:
    try:
        load_project(project.root)
    except ConfigError as error:
        return error
    pytest.fail("the project loaded without a ConfigError")


def _loads(project: Project) -> None:
    """The control: the file as it is now loads."""
    load_project(project.root)


def _restore(project: Project, text: str) -> None:
    (project.root / "headwater.toml").write_text(text)


def _original(project: Project) -> str:
    return (project.root / "headwater.toml").read_text()


def _listed(hint: str | None) -> set[str]:
    """The keys an "allowed keys there: a, b, c" hint lists."""
    assert hint is not None
    assert ":" in hint, hint
    return set(re.findall(r"[a-z_]+", hint.split(":", 1)[1]))


def _cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(project, *args, check=False)


def _one_error(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """Exit code 1, an ``Error:`` line and a ``Fix:`` line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, f"expected an Error: and a Fix: line, got:\n{result.stderr}"
    error, fix = lines
    assert error.startswith("Error: "), result.stderr
    assert fix.startswith("Fix: "), result.stderr
    return error, fix


# -- unknown keys, missing or unknown types ----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "typo"),
    [("files", "formt"), ("postgres", "tabel_prefix"), ("webhook", "batch_size")],
)
def test_unknown_key_lists_the_allowed_keys_of_that_sink_type(
    project: Project, kind: str, typo: str
) -> None:
    original = _original(project)
    _sink(project, "out", VALID[kind] + f"{typo} = 1\n")
    error = _config_error(project)
    assert f"unknown key `{typo}` in [sinks.out]" in error.message
    assert str(project.root / "headwater.toml") in error.message
    assert _listed(error.hint) - {"type"} == set(SETTINGS[kind].__struct_fields__), error.hint
    _restore(project, original)
    _sink(project, "out", VALID[kind])
    _loads(project)


@pytest.mark.parametrize(
    ("kind", "key", "other"),
    [("postgres", "format", "files"), ("files", "batch_rows", "webhook")],
    ids=["format-in-postgres", "batch_rows-in-files"],
)
def test_a_key_of_another_sink_type_is_reported_in_the_sink_that_has_it_wrong(
    project: Project, kind: str, key: str, other: str
) -> None:
    # headwater init declares [sinks.files] (with format); a webhook sink may
    # have batch_rows. The same key in a sink of another type is the mistake.
    if other == "webhook":
        _sink(project, "hook", VALID["webhook"] + "batch_rows = 100\n")
    _sink(project, "target", VALID[kind] + f'{key} = "csv"\n')
    error = _config_error(project)
    assert f"unknown key `{key}` in [sinks.target]" in error.message, error.message
    listed = _listed(error.hint) - {"type"}
    assert listed == set(SETTINGS[kind].__struct_fields__), error.hint
    assert key not in listed


def test_a_sink_without_type_names_the_sink_and_the_types(project: Project) -> None:
    _sink(project, "lake", 'url = "exports"\n')
    error = _config_error(project)
    assert "[sinks.lake]" in error.message, error.message
    assert "type" in error.message
    fix = f"{error.message} {error.hint or ''}"
    assert all(f'"{kind}"' in fix or f"'{kind}'" in fix for kind in SINK_TYPES), fix


def test_an_unknown_sink_type_names_the_value_the_sink_and_the_types(project: Project) -> None:
    _sink(project, "lake", 'type = "ftp"\nurl = "ftp://x"\n')
    error = _config_error(project)
    assert "'ftp'" in error.message or '"ftp"' in error.message
    assert "[sinks.lake]" in error.message, error.message
    fix = f"{error.message} {error.hint or ''}"
    assert all(f'"{kind}"' in fix or f"'{kind}'" in fix for kind in SINK_TYPES), fix


def test_an_unknown_format_names_the_sink_and_the_formats(project: Project) -> None:
    _sink(project, "lake", 'type = "files"\nurl = "exports"\nformat = "xml"\n')
    error = _config_error(project)
    assert "'xml'" in error.message or '"xml"' in error.message
    assert "[sinks.lake]" in error.message, error.message
    fix = f"{error.message} {error.hint or ''}"
    assert all(fmt in fix for fmt in ("parquet", "csv", "jsonl")), fix


# -- secrets in plain text ---------------------------------------------------------------


def test_a_webhook_secret_in_plain_text_is_refused_and_not_echoed(project: Project) -> None:
    original = _original(project)
    secret = "whsec_PlainTextSecretValue42"
    _sink(
        project,
        "crm-hook",
        f'type = "webhook"\nurl = "https://hooks.example.com/x"\nsecret = "{secret}"\n',
    )
    error = _config_error(project)
    assert "[sinks.crm-hook] secret" in error.message
    assert "${NAME}" in error.message
    assert error.hint is not None
    assert 'secret = "${CRM_HOOK_SECRET}"' in error.hint
    assert "export" in error.hint
    assert secret not in error.message + error.hint

    # As a user sees it: one sentence and the fix, the secret nowhere.
    result = _cli(project, "status")
    error_line, fix_line = _one_error(result)
    assert error_line == f"Error: {error.message}"
    assert fix_line == f"Fix: {error.hint}"
    assert secret not in result.stdout + result.stderr

    _restore(project, original)
    _sink(project, "crm-hook", VALID["webhook"])
    _loads(project)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2secret@db.internal:5432/crm",
        "host=db.internal user=app password=hunter2secret dbname=crm",
    ],
    ids=["url", "keywords"],
)
def test_a_postgres_url_with_a_plain_password_is_refused(project: Project, url: str) -> None:
    original = _original(project)
    _sink(project, "db", f'type = "postgres"\nurl = "{url}"\n')
    error = _config_error(project)
    assert "[sinks.db] url" in error.message
    assert "password" in error.message
    assert error.hint is not None
    assert '"${NAME}"' in error.hint
    assert "environment variable" in error.hint
    assert "hunter2secret" not in error.message + error.hint

    # Without a password (or with the whole URL in the environment) it loads.
    for allowed in ("postgresql://app@db.internal:5432/crm", "${HW_TEST_PG_URL}"):
        _restore(project, original)
        _sink(project, "db", f'type = "postgres"\nurl = "{allowed}"\n')
        _loads(project)


# -- names and numbers -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Lake", "9lake", "my.lake", "lake lake", "_lake"])
def test_a_bad_sink_name_is_refused_with_the_rule(project: Project, name: str) -> None:
    original = _original(project)
    _sink(project, f'"{name}"', VALID["files"])
    error = _config_error(project)
    assert f"sink name {name!r} is not allowed" in error.message
    assert error.hint is not None
    assert "lower-case letters" in error.hint
    _restore(project, original)
    _sink(project, "lake-2_b", VALID["files"])
    _loads(project)


@pytest.mark.parametrize(
    "line",
    ["max_attempts = 0", "max_attempts = -3", "backoff_seconds = -1", "max_backoff_seconds = -0.5"],
)
def test_retry_settings_out_of_range_are_refused(project: Project, line: str) -> None:
    original = _original(project)
    _sink(project, "lake", VALID["files"] + f"{line}\n")
    error = _config_error(project)
    assert "[sinks.lake]" in error.message
    assert "max_attempts must be at least 1" in error.message
    assert "not negative" in error.message
    _restore(project, original)
    _sink(project, "lake", VALID["files"] + "max_attempts = 1\nbackoff_seconds = 0\n")
    _loads(project)


# -- the sinks a pipeline names ----------------------------------------------------------


def _header_line(project: Project, pipeline: str, old: str, new: str) -> Path:
    path = project.root / "pipelines" / f"{pipeline}.sql"
    text = path.read_text()
    assert text.count(old) == 1, f"expected one {old!r} in {path}"
    path.write_text(text.replace(old, new))
    return path


def test_a_pipeline_naming_an_undeclared_sink_names_it_the_file_and_the_declared(
    project: Project,
) -> None:
    _sink(project, "lake", VALID["files"])
    path = _header_line(
        project, "hourly_event_counts", 'sinks = ["files"]', 'sinks = ["files", "crm"]'
    )
    # The pipeline is set apart, named with the file and the fix; the others run.
    for command, code in ((("pipelines",), 0), (("run", "--due"), 1)):
        said = _cli(project, *command)
        assert said.returncode == code, (said.stdout, said.stderr)
        assert "hourly_event_counts does not load: sinks names 'crm'" in said.stdout, said.stdout
        assert "[sinks.crm]" in said.stdout
        assert "declared: files, lake" in said.stdout, said.stdout
        assert f"  --> {path}" in said.stdout, said.stdout
        assert 'hint: add [sinks.crm] with type = "files", "postgres" or "webhook"' in said.stdout
    assert not (project.root / "exports").exists()  # it did not run, nothing was delivered

    _sink(project, "crm", VALID["files"])
    listed = _cli(project, "pipelines")
    assert listed.returncode == 0, listed.stderr
    assert "hourly_event_counts" in listed.stdout


def test_a_postgres_sink_on_a_pipeline_without_key_is_refused(project: Project) -> None:
    _sink(project, "db", VALID["postgres"])
    path = _header_line(
        project, "daily_active_users", 'key = ["day", "plan"]\n', 'sinks = ["db"]\n'
    )
    said = _cli(project, "pipelines").stdout
    assert "daily_active_users does not load: sink 'db' is a PostgreSQL table" in said, said
    assert "no key" in said, said
    assert f"  --> {path}" in said, said
    assert "hint: declare the output's key in the header: key = [" in said, said

    # With the key declared the same sink is accepted (no connection is made to check it).
    _header_line(
        project, "daily_active_users", 'sinks = ["db"]\n', 'key = ["day", "plan"]\nsinks = ["db"]\n'
    )
    listed = _cli(project, "pipelines")
    assert listed.returncode == 0, listed.stderr
    assert "daily_active_users" in listed.stdout
