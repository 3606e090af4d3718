"""Named SQL queries over the result database, run read-only, returned as DataFrames.

A query is one `.sql` file with a header comment (the sqlmesh/aiosql way):

    -- name: final_loss
    -- purpose: one line saying what it answers
    -- params:
    --   experiment (required): the experiment's name
    --   convention = 'exact' (exact | 6n | 6n_nonembed): what it selects
    -- columns: run_id, n_params, tokens, flops, loss

Parameters are DuckDB named placeholders (`$experiment`) bound by value, never pasted into the
SQL. A parameter has a default (`= literal`: 'text', a number, true/false or null) or is
`(required)`; a parenthesised `a | b` list restricts its values. The header must declare exactly
the placeholders the SQL uses (a test checks every file in queries/).

Where queries are found, first match wins: the directories in $SCALEDB_QUERY_PATH
(os.pathsep-separated), `<workspace>/queries/`, then the shipped ones (the top-level `queries/`,
packaged as `scaling_db/queries`).

Queries read; they never write. Every place that runs a user's SQL (`scaledb query`, fits and
figures, the dashboard) goes through `run_query`, which
- refuses, before running anything, more than one statement (DuckDB would run each and return
  the last one's rows) and every statement but SELECT (with SHOW, DESCRIBE, FROM-first
  and VALUES), EXPLAIN of a SELECT and the PRAGMAs that only report (`READ_ONLY_PRAGMAS`):
  no COPY TO, EXPORT, INSTALL/LOAD, SET/RESET, CHECKPOINT/VACUUM, ATTACH, CREATE, INSERT...;
- runs on the database attached read-only to an in-memory DuckDB with external access off (no
  file but the database is read or written), extension autoloading off and the configuration
  locked (`database.connect_sandboxed`), so a statement that slips past the check still cannot
  write. Reading files (joining one's own CSV) takes `allow_files=True` (CLI: `--allow-files`).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from scaling_db.errors import QueryError
from scaling_db.store.database import open_sandboxed
from scaling_db.workspace import Workspace

if TYPE_CHECKING:  # pandas only for the annotation: `scaledb validate` looks queries up without it
    import pandas as pd

#: The shipped queries: the top-level `queries/`, which the package holds as `scaling_db/queries`
#: (a symlink in the source tree, the files themselves in a built wheel).
BUILTIN_QUERY_DIR = Path(str(resources.files("scaling_db") / "queries"))
QUERY_PATH_ENV = "SCALEDB_QUERY_PATH"

_PARAM_RE = re.compile(
    r"""^(?P<name>[A-Za-z_]\w*)\s*
        (?:\((?P<required>required)\)|=\s*(?P<default>'(?:[^']|'')*'|[^\s(:]+))?\s*
        (?:\((?P<choices>[^)]*)\))?\s*
        (?::\s*(?P<doc>.*))?$""",
    re.VERBOSE,
)
_PLACEHOLDER_RE = re.compile(r"\$([A-Za-z_]\w*)")
# String literals, quoted identifiers and comments: a `$x` inside them is not a placeholder.
_NOT_CODE_RE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class QueryParam:
    name: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""

    def describe(self) -> str:
        head = f"{self.name} (required)" if self.required else f"{self.name} = {_literal(self.default)}"
        if self.choices:
            head += f" ({' | '.join(self.choices)})"
        return f"{head}: {self.doc}" if self.doc else head


@dataclass(frozen=True)
class NamedQuery:
    """One query: its header fields and SQL. `path` is None for inline SQL."""

    name: str
    purpose: str
    params: tuple[QueryParam, ...]
    columns: tuple[str, ...]
    sql: str
    path: Path | None = None

    @property
    def label(self) -> str:
        if self.path is None and self.name == "inline":
            return "(inline SQL)"
        return self.name if self.path is None or self.path.stem == self.name else f"{self.name} ({self.path})"

    def param(self, name: str) -> QueryParam | None:
        return next((p for p in self.params if p.name == name), None)


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _parse_literal(text: str) -> Any:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    lowered = text.lower()
    if lowered in ("null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def placeholders(sql: str) -> list[str]:
    """The `$name` placeholders of an SQL text, in order of first use."""
    code = _NOT_CODE_RE.sub(" ", sql)
    return list(dict.fromkeys(_PLACEHOLDER_RE.findall(code)))


def _split_params(text: str) -> list[str]:
    """Split an inline `a (required), b = 'x, y'` list on commas outside quotes and parentheses."""
    items, depth, quoted, current = [], 0, False, []
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and not quoted and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return [i for i in items if i]


def parse_query(text: str, path: Path | None = None, *, strict: bool = True) -> NamedQuery:
    """Parse a query file's header and SQL. `strict`: the header must declare exactly the SQL's
    placeholders (files); inline SQL without a header gets one required parameter per placeholder."""
    where = str(path) if path else "inline SQL"
    fields: dict[str, str] = {}
    param_lines: list[str] = []
    in_params = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        body = line[2:].strip()
        key, sep, value = body.partition(":")
        key = key.strip().lower()
        if sep and key in ("name", "purpose", "params", "columns") and " " not in key:
            in_params = key == "params"
            fields[key] = value.strip()
            if in_params and value.strip() and value.strip().lower() != "none":
                param_lines.extend(_split_params(value))
        elif in_params and body:
            param_lines.append(body)
    params = []
    for item in param_lines:
        found = _PARAM_RE.match(item)
        if not found:
            raise QueryError(f"{where}: cannot read the parameter line {item!r}. Write `name (required): doc` or "
                             "`name = 'default' (a | b): doc`.")
        choices = tuple(c.strip() for c in (found["choices"] or "").split("|") if c.strip())
        params.append(QueryParam(
            name=found["name"], required=bool(found["required"]),
            default=_parse_literal(found["default"]) if found["default"] is not None else None,
            choices=choices, doc=(found["doc"] or "").strip(),
        ))
    used = placeholders(text)
    declared = [p.name for p in params]
    if path is not None or fields:
        name = fields.get("name") or (path.stem if path else "inline")
    else:
        name = "inline"
    if strict and (path is not None or "params" in fields):
        missing = [u for u in used if u not in declared]
        unused = [d for d in declared if d not in used]
        if missing or unused:
            parts = []
            if missing:
                parts.append(f"uses {', '.join('$' + m for m in missing)} without declaring them under `-- params:`")
            if unused:
                parts.append(f"declares {', '.join(unused)} but never uses them")
            raise QueryError(f"{where}: query {name} " + " and ".join(parts) + ". Make the header match the SQL.")
    elif not params:
        params = [QueryParam(name=u, required=True) for u in used]
    columns = tuple(c.strip() for c in fields.get("columns", "").split(",") if c.strip())
    return NamedQuery(name=name, purpose=fields.get("purpose", ""), params=tuple(params),
                      columns=columns, sql=text, path=path)


def query_dirs(workspace: Workspace | str | Path | None = None) -> list[Path]:
    """Where named queries are looked up, in order."""
    dirs = [Path(p) for p in os.environ.get(QUERY_PATH_ENV, "").split(os.pathsep) if p]
    if workspace is not None:
        root = workspace.root if isinstance(workspace, Workspace) else Path(workspace)
        dirs.append(root / "queries")
    dirs.append(BUILTIN_QUERY_DIR)
    return [d for d in dirs if d.is_dir()]


def list_queries(workspace: Workspace | str | Path | None = None) -> list[NamedQuery]:
    """Every named query that can be run, by name (first directory wins)."""
    found: dict[str, NamedQuery] = {}
    for directory in query_dirs(workspace):
        for path in sorted(directory.glob("*.sql")):
            if path.stem not in found:
                found[path.stem] = parse_query(path.read_text(), path)
    return sorted(found.values(), key=lambda q: q.name)


def load_query(name_or_path: str | Path, workspace: Workspace | str | Path | None = None) -> NamedQuery:
    """A query by name (see `query_dirs`) or by the path of a `.sql` file."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".sql") or os.sep in text:
        path = Path(text)
        try:
            return parse_query(path.read_text(), path)
        except FileNotFoundError:
            raise QueryError(f"{path}: no such query file. `scaledb queries` lists the named ones.") from None
    for directory in query_dirs(workspace):
        path = directory / f"{text}.sql"
        if path.is_file():
            return parse_query(path.read_text(), path)
    names = [p.stem for d in query_dirs(workspace) for p in d.glob("*.sql")]
    close = difflib.get_close_matches(text, names, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    raise QueryError(f"query {text}: no such query ({hint}`scaledb queries` lists them).")


def _coerce(query: NamedQuery, param: QueryParam, value: Any) -> Any:
    """A value given as text (CLI) becomes the type of the parameter's default."""
    if not isinstance(value, str) or param.default is None or isinstance(param.default, str):
        return value
    kind = type(param.default)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except ValueError:
        raise QueryError(
            f"query {query.label}: parameter {param.name} must be {kind.__name__} (got {value!r} vs default "
            f"{_literal(param.default)})."
        ) from None


def bind_params(query: NamedQuery, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values to bind: defaults, overridden by `given`; text coerced to the default's type.

    Raises QueryError for an unknown parameter (with a suggestion), a missing required one, or a
    value outside the declared choices.
    """
    given = dict(given or {})
    known = [p.name for p in query.params]
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            takes = ", ".join(known) if known else "no parameters"
            raise QueryError(f"query {query.label}: unknown parameter {key!r} ({hint}it takes: {takes}).")
    values: dict[str, Any] = {}
    for param in query.params:
        if param.name in given:
            value = _coerce(query, param, given[param.name])
        elif param.required:
            doc = f" ({param.doc})" if param.doc else ""
            raise QueryError(
                f"query {query.label}: missing parameter {param.name}{doc}. Pass it as {param.name}=VALUE "
                f"(CLI: --param {param.name}=VALUE)."
            )
        else:
            value = param.default
        if param.choices and value is not None and str(value) not in param.choices:
            lowered = {c.lower(): c for c in param.choices}
            close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1)
            hint = f" Did you mean `{lowered[close[0]]}`?" if close else ""
            raise QueryError(
                f"query {query.label}: parameter {param.name} is {value!r} vs one of "
                f"{', '.join(param.choices)}.{hint}"
            )
        values[param.name] = value
    used = set(placeholders(query.sql))
    return {k: v for k, v in values.items() if k in used}


#: PRAGMAs that only report; any other PRAGMA (most change a setting) is refused.
READ_ONLY_PRAGMAS = frozenset({
    "database_list", "database_size", "functions", "metadata_info", "platform", "show", "show_databases",
    "show_tables", "show_tables_expanded", "storage_info", "table_info", "user_agent", "version",
})
_LEADING_COMMENTS_RE = re.compile(r"\A(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
_WHY = {
    "COPY": "writes files", "COPY_DATABASE": "writes a database", "EXPORT": "writes files",
    "LOAD": "installs or loads an extension", "EXTENSION": "installs or loads an extension",
    "SET": "changes settings", "VARIABLE_SET": "changes settings", "PRAGMA": "changes settings",
    "CALL": "calls a procedure (CHECKPOINT and the like)", "VACUUM": "rewrites the database",
    "ATTACH": "opens another database", "DETACH": "detaches a database", "TRANSACTION": "controls transactions",
}


def _refuse(query: NamedQuery, text: str, kind: str) -> QueryError:
    why = _WHY.get(kind, "writes tables")
    head = " ".join(_LEADING_COMMENTS_RE.sub("", text).split())[:60]
    return QueryError(
        f"query {query.label}: `{head}` refused ({kind} statement, {why}): queries may not modify the database, "
        "write files, load extensions or change settings. Run a SELECT; to change the database use "
        "`scaledb ingest`, `scaledb import` or `scaledb fit`."
    )


def check_read_only(query: NamedQuery) -> None:
    """Raise QueryError unless the query is one statement and it only reads (see the module docstring)."""
    try:
        statements = duckdb.extract_statements(query.sql)
    except duckdb.ParserException as exc:
        raise QueryError(f"query {query.label}: {str(exc).strip()}") from None
    for statement in statements:
        text = _LEADING_COMMENTS_RE.sub("", statement.query)
        try:
            kind = statement.type.name
        except ValueError:  # a statement type this duckdb's Python enum does not know (UPDATE EXTENSIONS)
            kind = "unknown"
        if kind == "SELECT":
            continue
        if kind == "EXPLAIN":
            inner = re.sub(r"\AEXPLAIN\s+(?:ANALYZE\s+)?", "", text, flags=re.IGNORECASE)
            try:
                inner_types = [s.type.name for s in duckdb.extract_statements(inner)]
            except (duckdb.Error, ValueError):
                inner_types = ["unknown"]
            if inner_types == ["SELECT"]:
                continue
        if kind == "PRAGMA":
            # COPY FROM DATABASE parses as a PRAGMA too: the text must be `PRAGMA name[(args)]`.
            found = re.match(r"PRAGMA\s+(\w+)\s*(?:\(|;|\Z)", text.strip(), flags=re.IGNORECASE)
            if found and found.group(1).lower() in READ_ONLY_PRAGMAS:
                continue
        raise _refuse(query, statement.query, kind)
    if len(statements) > 1:  # DuckDB would run them all and return only the last one's rows
        raise QueryError(f"query {query.label}: {len(statements)} statements vs 1: a query is one statement, "
                         "whose rows are the result. Run them one at a time.")


def _check_experiment(con: duckdb.DuckDBPyConnection, query: NamedQuery, values: Mapping[str, Any]) -> None:
    """A misspelt experiment gives an empty result silently; name it instead."""
    experiment = values.get("experiment")
    if not isinstance(experiment, str):
        return
    names = [r[0] for r in con.execute("SELECT experiment FROM experiments ORDER BY experiment").fetchall()]
    if experiment in names:
        return
    close = difflib.get_close_matches(experiment, names, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    have = ", ".join(names) if names else "none yet: run `scaledb ingest`"
    raise QueryError(f"query {query.label}: no experiment {experiment!r} in the database ({hint}experiments: {have}).")


def _check_revision(con: duckdb.DuckDBPyConnection, query: NamedQuery, values: Mapping[str, Any]) -> None:
    """A revision hash that names no compile of the experiment would select nothing; say so."""
    revision = values.get("revision")
    if not isinstance(revision, str) or revision in ("current", "all"):
        return
    experiment = values.get("experiment")
    known = [r[0] for r in con.execute(
        "SELECT DISTINCT revision FROM run_revisions WHERE $e IS NULL OR experiment = $e ORDER BY revision",
        {"e": experiment if isinstance(experiment, str) else None}).fetchall()]
    if revision in known:
        return
    of = f" of experiment {experiment!r}" if isinstance(experiment, str) else ""
    raise QueryError(f"query {query.label}: no revision {revision!r}{of} (got {revision!r} vs current, all"
                     + "".join(f", {k}" for k in known) + "): each compile of the spec is one, its hash listed in "
                     "the `run_revisions` table.")


def run_query(
    workspace: Workspace | str | Path,
    name_or_path: str | Path | None = None,
    sql: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    allow_files: bool = False,
    lock_timeout_s: float | None = None,
) -> pd.DataFrame:
    """Run a named query, a .sql file, or inline SQL, read-only; a DataFrame back.

    The one way scaledb runs a user's SQL: statements that write are refused (`check_read_only`)
    and the connection cannot write (`connect_sandboxed`). `allow_files` lets the query read
    files beside the database, e.g. `read_csv('mine.csv')`.
    """
    if (name_or_path is None) == (sql is None):
        raise QueryError("run_query: give a query name or path, or inline sql (exactly one of them).")
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    query = load_query(name_or_path, ws) if name_or_path is not None else parse_query(sql or "", None, strict=True)
    values = bind_params(query, params)
    check_read_only(query)
    with open_sandboxed(ws, allow_files=allow_files, lock_timeout_s=lock_timeout_s) as con:
        _check_experiment(con, query, values)
        _check_revision(con, query, values)
        try:
            return con.execute(query.sql, values).df()
        except duckdb.Error as exc:
            raise _query_error(query, exc) from None


def _query_error(query: NamedQuery, exc: duckdb.Error) -> QueryError:
    message = str(exc).strip()
    first = message.splitlines()[0]
    if "read-only mode" in message:
        return QueryError(f"query {query.label}: queries may not modify the database; they run on a read-only "
                          f"connection ({first})")
    if isinstance(exc, duckdb.PermissionException) and "disabled by configuration" in message:
        return QueryError(f"query {query.label}: queries read only the database, not other files ({first}). "
                          "To read your own files, pass --allow-files (Python: allow_files=True).")
    return QueryError(f"query {query.label}: {message}")
