"""``headwater.toml`` is strict, keys are stored hashed, and the CLI fails in one sentence.

Through :func:`headwater.config.project.load_project` and through the CLI as a
user runs it (``python -m headwater --project DIR ...``): an unknown key is an
error that names the key, its table and the allowed keys; a write key is a
hash or an environment reference, never the key itself; an error is one
``Error:`` line and one ``Fix:`` line, exit code 1, no traceback.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import msgspec
import pytest

from headwater.collect.settings import CollectorSettings, SourceSettings
from headwater.config.file import ProjectFile, ProjectSettings
from headwater.config.project import load_project
from headwater.config.server import ServerSettings
from headwater.core.errors import ConfigError
from headwater.core.secrets import KeyHash
from headwater.store.settings import StoreSettings, WarehouseSettings
from tests.conftest import HEADWATER, Project, Server

KEY = re.compile(r"hw_wk_[A-Za-z0-9_-]{16,}")
ENV_NAME = "HW_TEST_CONFIG_WRITE_KEY"


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the CLI wide (as the server fixture does), without debug or a stray key.

    That a long sentence is not wrapped at the default width is checked once, in
    test_an_error_is_one_line_at_the_default_width.
    """
    monkeypatch.setenv("COLUMNS", "1000")
    for name in ("HEADWATER_DEBUG", ENV_NAME):
        monkeypatch.delenv(name, raising=False)


def _toml(project: Project) -> Path:
    return project.root / "headwater.toml"


def _insert(project: Project, table: str, line: str) -> None:
    """Add ``line`` right under the ``[table]`` header that ``headwater init`` wrote."""
    path = _toml(project)
    text = path.read_text()
    header = f"[{table}]\n"
    assert text.count(header) == 1, f"expected one {header!r} in the scaffold"
    path.write_text(text.replace(header, header + line + "\n", 1))


def _set_write_key(project: Project, value: str) -> None:
    path = _toml(project)
    text, n = re.subn(r'(?m)^write_key = ".*"$', f'write_key = "{value}"', path.read_text())
    assert n == 1
    path.write_text(text)


def _config_error(project: Project, *, keys: bool = False) -> ConfigError:
    """The error of loading the project (and with ``keys``, of reading its write keys)."""
    try:
        loaded = load_project(project.root)
        if keys:
            loaded.source_keys()
    except ConfigError as error:
        return error
    pytest.fail("the project loaded without a ConfigError")


def _run(project: Project, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The CLI, without raising on failure and with a short timeout (for ``up``)."""
    return subprocess.run(
        [*HEADWATER, "--project", str(project.root), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _assert_one_error(result: subprocess.CompletedProcess[str], message: str) -> str:
    """Exit code 1, an ``Error:`` line and a ``Fix:`` line and nothing else; the first."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 2, f"expected an Error: and a Fix: line, got:\n{result.stderr}"
    error, fix = lines
    assert error.startswith("Error: "), error
    assert fix.startswith("Fix: "), fix
    assert fix[len("Fix: ") :].strip()
    assert message in error, f"{message!r} not in {error!r}"
    return error


# -- unknown keys -------------------------------------------------------------------


def _fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


@pytest.mark.parametrize(
    ("table", "line", "key", "where", "allowed"),
    [
        ("collector", "max_batch_event = 10", "max_batch_event", "[collector]", CollectorSettings),
        ("server", "prot = 9000", "prot", "[server]", ServerSettings),
        ("project", "dialetc = 'duckdb'", "dialetc", "[project]", ProjectSettings),
        ("store", "engnie = 'duckdb'", "engnie", "[store]", StoreSettings),
        ("sources.web", "writekey = 'x'", "writekey", "[sources.web]", SourceSettings),
    ],
    ids=["collector", "server", "project", "store", "source"],
)
def test_an_unknown_key_names_the_key_the_table_and_the_allowed_keys(
    project: Project,
    table: str,
    line: str,
    key: str,
    where: str,
    allowed: type[msgspec.Struct],
) -> None:
    _insert(project, table, line)
    error = _config_error(project)
    assert f"`{key}`" in error.message
    assert where in error.message
    assert "headwater.toml: " in error.message  # the file comes first
    assert error.hint is not None
    listed = set(re.findall(r"[a-z_]+", error.hint.split(":", 1)[1]))
    assert listed == set(_fields(allowed)), error.hint


def test_an_unknown_table_is_named_at_the_top_level(project: Project) -> None:
    path = _toml(project)
    path.write_text(path.read_text() + "\n[colector]\nmax_depth = 3\n")
    error = _config_error(project)
    assert "`colector`" in error.message
    assert "top level" in error.message
    assert error.hint is not None
    assert set(re.findall(r"[a-z_]+", error.hint.split(":", 1)[1])) == set(_fields(ProjectFile))


def test_a_wrong_type_names_the_key(project: Project) -> None:
    _insert(project, "collector", 'max_depth = "deep"')
    error = _config_error(project)
    assert "collector.max_depth" in error.message
    assert "int" in error.message


@pytest.mark.parametrize("broken", ["unknown-key", "plaintext-key"])
def test_the_cli_prints_the_sentence_and_fix_as_they_are(project: Project, broken: str) -> None:
    # Table names such as [collector] are text, not terminal markup to be swallowed.
    if broken == "unknown-key":
        _insert(project, "collector", "max_batch_event = 10")
        expected = _config_error(project)
        assert "in [collector]" in expected.message
        result = _run(project, "query", "SELECT 1")
    else:
        _set_write_key(project, "hw_wk_plaintextKeyThatShouldNotBeHere")
        expected = _config_error(project, keys=True)
        assert "[sources.web] write_key" in expected.message
        result = _run(project, "up", "--port", "0")
    assert result.stderr.splitlines() == [f"Error: {expected.message}", f"Fix: {expected.hint}"]
    assert result.returncode == 1


def test_an_error_is_one_line_at_the_default_width(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS")  # as in a CI log or a pipe: no terminal to ask
    result = _run(project, "init", str(project.root))
    assert result.returncode == 1
    sentence = f"Error: {project.root / 'headwater.toml'} already exists"
    assert len(sentence) > 80  # a long path: longer than the default width of 80
    lines = result.stderr.splitlines()
    assert lines[0] == sentence, f"the sentence is wrapped over lines:\n{result.stderr}"
    assert len(lines) == 2
    assert lines[1].startswith("Fix: ")


# -- write keys --------------------------------------------------------------------


def test_a_plaintext_write_key_is_refused_with_a_hint(project: Project) -> None:
    _set_write_key(project, "hw_wk_plaintextKeyThatShouldNotBeHere")
    error = _config_error(project, keys=True)
    assert "[sources.web] write_key" in error.message
    assert "sha256:" in error.message
    assert error.hint is not None
    assert "headwater sources add" in error.hint
    assert "plaintextKey" not in error.message + error.hint

    result = _run(project, "up", "--port", "0")
    _assert_one_error(result, "write_key must be a hash")
    assert "headwater sources add" in result.stderr
    assert "plaintextKey" not in result.stdout + result.stderr
    assert "Headwater is up" not in result.stdout


@pytest.mark.parametrize("value", ["$HW_KEY", "${lower-case}", "${}", "sha256:abc", ""])
def test_a_malformed_write_key_is_refused(project: Project, value: str) -> None:
    _set_write_key(project, value)
    error = _config_error(project, keys=True)
    assert "[sources.web] write_key" in error.message
    assert error.hint is not None


def test_sources_list_does_not_call_a_plaintext_key_hashed(project: Project) -> None:
    _set_write_key(project, "hw_wk_plaintextKeyThatShouldNotBeHere")
    result = _run(project, "sources", "list")
    assert result.returncode == 1 or "hashed" not in result.stdout, result.stdout


def test_an_environment_reference_is_read_when_set(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_write_key(project, "${" + ENV_NAME + "}")
    monkeypatch.setenv(ENV_NAME, "hw_wk_fromTheEnvironment0123456789")
    keys = load_project(project.root).source_keys()
    assert keys["web"].matches("hw_wk_fromTheEnvironment0123456789")
    assert not keys["web"].matches(project.key)

    # A server started with the variable set accepts that key and no other.
    server = Server(project).start()
    try:
        good = server.post(
            "/v1/track",
            auth=("hw_wk_fromTheEnvironment0123456789", ""),
            json={"userId": "u-env", "event": "From Env"},
        )
        assert good.status_code == 200, good.text
        old = server.post(
            "/v1/track", auth=(project.key, ""), json={"userId": "u-old", "event": "Old Key"}
        )
        assert old.status_code == 401
        rows = project.query("SELECT user_id, source FROM events").to_pylist()
        assert rows == [{"user_id": "u-env", "source": "web"}]
    finally:
        server.stop()


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_an_environment_reference_fails_clearly_when_unset(
    project: Project, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    _set_write_key(project, "${" + ENV_NAME + "}")
    if value is not None:
        monkeypatch.setenv(ENV_NAME, value)
    error = _config_error(project, keys=True)
    assert ENV_NAME in error.message
    assert "not set" in error.message
    assert "[sources.web] write_key" in error.message
    assert error.hint is not None
    assert f"export {ENV_NAME}=" in error.hint

    result = _run(project, "up", "--port", "0")
    _assert_one_error(result, f"environment variable {ENV_NAME}, which is not set")
    assert f"export {ENV_NAME}=" in result.stderr


# -- headwater sources add ------------------------------------------------------------


def test_sources_add_prints_the_key_once_and_stores_only_its_hash(project: Project) -> None:
    before = _toml(project).read_text()
    result = _run(project, "sources", "add", "backend")
    assert result.returncode == 0, result.stderr
    keys = KEY.findall(result.stdout + result.stderr)
    assert len(keys) == 1, result.stdout
    key = keys[0]
    assert key != project.key

    text = _toml(project).read_text()
    assert text.startswith(before)  # the rest of the file is kept as it was
    assert key not in text
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert re.search(rf'(?m)^\[sources\.backend\]\nwrite_key = "sha256:{digest}"$', text)

    loaded = load_project(project.root)
    assert sorted(loaded.settings.sources) == ["backend", "web"]
    assert loaded.source_keys()["backend"].matches(key)
    assert KeyHash.parse(f"sha256:{digest}").matches(key)
    assert not loaded.source_keys()["web"].matches(key)


@pytest.mark.parametrize("name", ["web", "backend"])
def test_sources_add_refuses_a_duplicate_name(project: Project, name: str) -> None:
    if name == "backend":
        assert _run(project, "sources", "add", "backend").returncode == 0
    before = _toml(project).read_text()
    result = _run(project, "sources", "add", name)
    _assert_one_error(result, f"source '{name}' already exists")
    assert KEY.search(result.stdout + result.stderr) is None
    assert _toml(project).read_text() == before


@pytest.mark.parametrize(
    "name",
    ["Backend", "1api", "api v2", "api.v2", "a]\n[collector", "x" * 64, "_api", "é"],
    ids=["upper", "digit-first", "space", "dot", "toml-injection", "too-long", "underscore", "é"],
)
def test_sources_add_refuses_a_bad_name(project: Project, name: str) -> None:
    before = _toml(project).read_text()
    result = _run(project, "sources", "add", name)
    _assert_one_error(result, "is not allowed")
    assert KEY.search(result.stdout + result.stderr) is None
    assert _toml(project).read_text() == before


# -- headwater init ----------------------------------------------------------------


def test_init_refuses_an_existing_project(project: Project) -> None:
    before = _toml(project).read_bytes()
    result = subprocess.run(
        [*HEADWATER, "init", str(project.root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    _assert_one_error(result, "already exists")
    assert "headwater.toml" in result.stderr
    assert KEY.search(result.stdout + result.stderr) is None
    assert _toml(project).read_bytes() == before


def test_init_prints_a_key_that_matches_the_stored_hash(tmp_path: Path) -> None:
    result = subprocess.run(
        [*HEADWATER, "init", str(tmp_path / "fresh"), "--source", "api"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    [key] = KEY.findall(result.stdout)
    text = (tmp_path / "fresh" / "headwater.toml").read_text()
    assert key not in text
    assert load_project(tmp_path / "fresh").source_keys()["api"].matches(key)


def test_a_folder_without_a_project_is_one_error(tmp_path: Path) -> None:
    empty = Project(root=tmp_path / "nothing-here", key="")
    empty.root.mkdir()
    _assert_one_error(_run(empty, "query", "SELECT 1"), "no headwater.toml")


# -- headwater query is read-only -----------------------------------------------------


def _counts(project: Project) -> tuple[int, int]:
    """Rows in ``events`` and in ``failed_events`` (through the server when one runs)."""
    [row] = project.query(
        "SELECT (SELECT count(*) FROM events) AS e, (SELECT count(*) FROM failed_events) AS f"
    ).to_pylist()
    return int(row["e"]), int(row["f"])


WRITES = {
    "insert": "INSERT INTO failed_events (id, received_at, code, message) "
    "VALUES ('x', now(), 'injected', 'm')",
    "delete": "DELETE FROM events",
    "drop": "DROP TABLE failed_events",
    "two-statements": "SELECT 1; DELETE FROM events",
    "explain-analyze": "EXPLAIN ANALYZE INSERT INTO failed_events (id, received_at, code, message) "
    "VALUES ('x', now(), 'injected', 'm')",
    # Each of these ran its statement through a running server before reads were decided
    # by parsing: an option list, a leading semicolon, a file written, a setting changed.
    "explain-options": "EXPLAIN (FORMAT json, ANALYZE) DELETE FROM events",
    "leading-semicolon": ";EXPLAIN ANALYZE DELETE FROM events",
    "explain-create": "EXPLAIN (ANALYZE, FORMAT json) CREATE TABLE injected AS SELECT 1",
    "copy": "COPY events TO 'copied.csv'",
    "set": "SET threads = 1",
    "read-file": "SELECT * FROM read_csv('/etc/passwd')",
    "data-cte": "WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d",
}
MESSAGES = {
    "insert": "INSERT statements are not allowed here",
    "delete": "DELETE statements are not allowed here",
    "drop": "DROP statements are not allowed here",
    "two-statements": "holds 2 statements where one is expected",
    "explain-analyze": "EXPLAIN statements are not allowed here",
    "explain-options": "EXPLAIN statements are not allowed here",
    "leading-semicolon": "EXPLAIN statements are not allowed here",
    "explain-create": "EXPLAIN statements are not allowed here",
    "copy": "COPY statements are not allowed here",
    "set": "SET statements are not allowed here",
    "read-file": "read_csv() reads from outside the store's tables",
    "data-cte": "DELETE statements are not allowed here",
}


@pytest.mark.parametrize("kind", list(WRITES))
def test_query_refuses_writes_without_a_server(project: Project, kind: str) -> None:
    result = _run(project, "query", WRITES[kind])
    assert _counts(project) == (0, 0)
    error = _assert_one_error(result, MESSAGES[kind])
    assert error.startswith("Error: query failed")


@pytest.mark.parametrize("kind", list(WRITES))
def test_query_refuses_writes_through_the_server(
    shared_project: Project, shared_server: Server, kind: str
) -> None:
    project = shared_project
    sent = shared_server.post(
        "/v1/track", auth=(project.key, ""), json={"userId": f"u-{kind}", "event": "E"}
    )
    assert sent.status_code == 200
    before = _counts(project)
    assert before[0] >= 1
    result = _run(project, "query", WRITES[kind])
    # Nothing was written: the events are still there, nothing was injected or dropped,
    # no table made, no file written (settings: see test_query_guard.py).
    assert _counts(project) == before
    error = _assert_one_error(result, MESSAGES[kind])
    assert error.startswith("Error: query failed")
    assert "SELECT" in result.stderr.splitlines()[1]  # the fix says what may run
    tables = project.query("SELECT table_name FROM information_schema.tables")["table_name"]
    assert "injected" not in tables.to_pylist()
    assert not list(project.root.rglob("copied.csv"))


def test_query_allows_what_its_hint_promises(
    shared_project: Project, shared_server: Server
) -> None:
    for sql in (
        "SELECT count(*) FROM events",
        "WITH e AS (SELECT * FROM events) SELECT event, count(*) FROM e GROUP BY 1",
        "SELECT * FROM events UNION ALL SELECT * FROM events",
        "VALUES (1, 'a')",
        "DESCRIBE events",
        "SELECT table_name FROM information_schema.tables",
        "SELECT 1;",
    ):
        result = shared_project.cli("query", sql, check=False)
        assert result.returncode == 0, (sql, result.stderr)


def test_debug_shows_the_traceback(project: Project) -> None:
    _insert(project, "collector", "max_batch_event = 10")
    result = _run(project, "--debug", "query", "SELECT 1")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConfigError" in result.stderr


# -- a hot store offloaded into a warehouse -------------------------------------------

PG_URL = "${HW_TEST_CONFIG_PG_URL}"
HOT = f'engine = "postgres"\nurl = "{PG_URL}"\nschema = "hw_prod"\n'
SPARK = 'engine = "spark"\nwarehouse = "/srv/warehouse"\n'
BIGQUERY = 'engine = "bigquery"\nproject = "acme"\ndataset = "events"\n'


def _prod(project: Project, store: str, warehouse: str | None = None, *, env: bool = True) -> None:
    """Declare the ``prod`` environment's store and warehouse (with ``env=False``, the
    top-level ``[warehouse]`` beside a replaced top-level ``[store]``)."""
    path = _toml(project)
    text = path.read_text()
    if env:
        text += f"\n[environments.prod.store]\n{store}"
        if warehouse is not None:
            text += f"\n[environments.prod.warehouse]\n{warehouse}"
    else:
        old = '[store]\nengine = "duckdb"\npath = "events.duckdb"       # inside data_dir\n'
        assert old in text
        text = text.replace(old, f"[store]\n{store}")
        if warehouse is not None:
            text += f"\n[warehouse]\n{warehouse}"
    path.write_text(text)


def _prod_error(project: Project) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_project(project.root, "prod")
    return caught.value


@pytest.mark.parametrize("env", [True, False], ids=["environment", "top-level"])
@pytest.mark.parametrize(("store", "engine"), [(SPARK, "spark"), (BIGQUERY, "bigquery")])
def test_a_warehouse_beside_a_warehouse_store_is_refused_with_the_fix(
    project: Project, store: str, engine: str, env: bool
) -> None:
    _prod(project, store, SPARK if engine == "bigquery" else BIGQUERY, env=env)
    other = "spark" if engine == "bigquery" else "bigquery"
    error = _prod_error(project) if env else _config_error(project)
    prefix = "environments.prod." if env else ""
    assert f'[{prefix}store] engine = "{engine}" is a warehouse' in error.message
    assert f"[{prefix}warehouse] is declared too" in error.message
    assert error.hint == (
        f'make [{prefix}store] engine = "postgres" (the hot store) and keep '
        f'[{prefix}warehouse] engine = "{other}"'
    )


def test_retain_shorter_than_the_dedupe_window_is_refused(project: Project) -> None:
    _prod(project, HOT + 'retain = "1d"\n', SPARK)
    error = _prod_error(project)
    assert "[environments.prod.store] retain = '1d' is shorter than [collector] dedupe_window" in (
        error.message
    )
    assert error.hint is not None
    assert "7 days" in error.hint
    # As long as the window (the default 7d both) is accepted.
    _toml(project).write_text(_toml(project).read_text().replace('retain = "1d"', 'retain = "7d"'))
    assert load_project(project.root, "prod").settings.store.retain == "7d"


@pytest.mark.parametrize("interval", ["7h", "25h", "0s", "50m", "500ms"])
def test_an_offload_interval_that_does_not_divide_a_day_is_refused(
    project: Project, interval: str
) -> None:
    _prod(project, HOT, SPARK + f'offload_interval = "{interval}"\n')
    error = _prod_error(project)
    assert (
        f"[environments.prod.warehouse] offload_interval = '{interval}' does not divide a day "
        "into intervals of a second or more" in error.message
    )


@pytest.mark.parametrize("interval", ["15m", "1h", "3h", "1d"])
def test_an_offload_interval_that_divides_a_day_is_accepted(
    project: Project, interval: str
) -> None:
    _prod(project, HOT, SPARK + f'offload_interval = "{interval}"\n')
    warehouse = load_project(project.root, "prod").settings.warehouse
    assert warehouse is not None
    assert warehouse.offload_interval == interval


@pytest.mark.parametrize(
    ("interval", "refused"), [("15m", True), ("2h", True), ("1h", False), ("1d", False)]
)
def test_bigquery_offloads_whole_hour_or_day_partitions_only(
    project: Project, interval: str, refused: bool
) -> None:
    _prod(project, HOT, BIGQUERY + f'offload_interval = "{interval}"\n')
    if not refused:
        assert load_project(project.root, "prod").settings.warehouse is not None
        return
    error = _prod_error(project)
    assert f"offload_interval = '{interval}': BigQuery partitions events by hour or by day" in (
        error.message
    )
    assert error.hint == 'offload_interval = "1h" (or "1d")'


@pytest.mark.parametrize(
    ("store", "warehouse", "separate"),
    [
        (HOT, HOT, False),
        (HOT, HOT.replace("hw_prod", "hw_warehouse"), True),
        ('engine = "duckdb"\n', 'engine = "duckdb"\npath = "events.duckdb"\n', False),
        ('engine = "duckdb"\n', 'engine = "duckdb"\npath = "warehouse.duckdb"\n', True),
        (HOT, SPARK, True),
    ],
    ids=["same-postgres", "other-schema", "same-duckdb", "other-duckdb-file", "spark"],
)
def test_a_warehouse_in_the_store_s_own_place_is_the_store_itself(
    project: Project, store: str, warehouse: str, separate: bool
) -> None:
    from headwater.runtime.workspace import has_warehouse

    _prod(project, store, warehouse)
    loaded = load_project(project.root, "prod")
    assert loaded.settings.warehouse is not None
    assert has_warehouse(loaded) is separate


@pytest.mark.parametrize("env", [True, False], ids=["environment", "top-level"])
@pytest.mark.parametrize(
    ("table", "allowed"), [("warehouse", WarehouseSettings), ("store", StoreSettings)]
)
def test_an_unknown_key_of_a_store_or_warehouse_names_its_table_and_keys(
    project: Project, table: str, allowed: type[msgspec.Struct], env: bool
) -> None:
    typo = 'offload_every = "1h"\n'
    if table == "warehouse":
        _prod(project, HOT, SPARK + typo, env=env)
    else:
        _prod(project, HOT + typo, SPARK, env=env)
    error = _prod_error(project) if env else _config_error(project)
    where = f"[environments.prod.{table}]" if env else f"[{table}]"
    assert f"unknown key `offload_every` in {where}" in error.message
    assert error.hint is not None
    listed = set(re.findall(r"[a-z_]+", error.hint.split(":", 1)[1]))
    assert listed == set(_fields(allowed)), error.hint
