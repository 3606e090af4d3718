"""docs/*.md (and the README) are true: their examples run or parse, and what they name exists.

Blocks tagged `<!-- docs-test: python -->` run against a small workspace, `reference` blocks
against ../shared/data/reference; every `scaledb` line of a bash block parses with the real CLI,
every YAML block is a valid spec or spec section, every Python block compiles, every named repo
file, dotted `scaling_db.` name and link (with its #anchor) exists. See tests/doc_blocks.py.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO, shared_path
from doc_blocks import DOCS, blocks, scaledb_calls, command_lines, tagged
from scaling_db.cli import cli
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.schema import ExperimentSpec
from scaling_db.store.query import parse_query

ALL_BLOCKS = [b for path in DOCS for b in blocks(path)]
CALLS = [(f"{b.where} scaledb {' '.join(args)[:50]}", args) for b in ALL_BLOCKS if b.lang == "bash"
         for line in command_lines(b.text) for args in scaledb_calls(line)]
BASE_SPEC = yaml.safe_load((REPO / "specs" / "ba_graph.yaml").read_text())


def by_lang(lang: str) -> list:
    return [pytest.param(b, id=b.where) for b in ALL_BLOCKS if b.lang == lang]


@pytest.mark.parametrize(("where", "args"), CALLS, ids=[c[0] for c in CALLS])
def test_every_scaledb_line_parses(where: str, args: list[str]) -> None:
    # `--help` is eager: click parses every option (unknown ones fail) and stops before running.
    out = CliRunner().invoke(cli, [*args, "--help"])
    assert out.exit_code == 0, f"{where}: {out.output}"
    assert "Usage:" in out.output


def test_the_docs_have_command_lines() -> None:
    assert len(CALLS) > 30 and any("docs/scaling-out.md" in where for where, _ in CALLS)


def _compiles(tmp_path: Path, spec: dict) -> str | None:
    """None if `spec` compiles, else the error."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        compile_spec(path)
    except Exception as exc:  # noqa: BLE001 - any failure is the test's message
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("block", by_lang("yaml"))
def test_yaml_blocks_are_valid_specs_or_sections(block, tmp_path: Path) -> None:
    """A whole spec compiles; a section compiles in place of ba_graph.yaml's (a nested field,
    e.g. `parameterization:`, in the section that has it)."""
    data = yaml.safe_load(block.text)
    if data is None:  # only a comment, e.g. the yaml-language-server line
        assert block.text.lstrip().startswith("#")
        return
    if "experiment" in data:
        assert _compiles(tmp_path, data) is None, block.where
        return
    spec, errors = copy.deepcopy(BASE_SPEC), []
    for key, value in data.items():
        sections = [None] if key in ExperimentSpec.model_fields else ["model", "train", "data"]
        for section in sections:
            candidate = copy.deepcopy(spec)
            (candidate if section is None else candidate[section])[key] = value
            error = _compiles(tmp_path, candidate)
            if error is None:
                spec = candidate
                break
            errors.append(error)
        else:
            pytest.fail(f"{block.where}: `{key}:` is not valid in any section: {errors}")


@pytest.mark.parametrize("block", by_lang("python"))
def test_python_blocks_compile(block) -> None:
    compile(block.text, block.where, "exec")


@pytest.mark.parametrize("block", [p for p in by_lang("sql") if "..." not in p.values[0].text])
def test_complete_sql_blocks_parse(block) -> None:
    """A block with a `-- name:` header is a named query with parameters; any other is plain SQL
    that DuckDB's parser accepts."""
    if "-- name:" in block.text:
        query = parse_query(block.text, Path(f"{block.where}.sql"))
        assert query.name and query.params
    else:
        assert duckdb.extract_statements(block.text), block.where


def test_files_the_docs_name_exist() -> None:
    roots = "specs|scripts|docs|tests|runners|queries|benchmarks|scaling_db|\\.ci"
    missing = []
    for path in DOCS:
        for name in re.findall(rf"(?<![\w./<>$-])((?:{roots})/[\w./-]*\w)", path.read_text()):
            if not (REPO / name).exists():
                missing.append(f"{path.name}: {name}")
    assert missing == []


def test_dotted_names_the_docs_use_exist() -> None:
    missing = []
    for path in DOCS:
        for name in sorted(set(re.findall(r"\bscaling_db(?:\.\w+)+", path.read_text()))):
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                    break
                except ModuleNotFoundError:
                    continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(f"{path.name}: {name}")
    assert missing == []


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_and_citations_resolve() -> None:
    """Markdown links between the docs, and citations of docs/science.md sections anywhere."""
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"\w+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists() or (anchor and anchor not in anchors(dest)):
                broken.append(f"{path.name}: {target}")
    science = anchors(REPO / "docs" / "science.md")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for name in tracked:
        if name.endswith((".py", ".yaml", ".md", ".sql")) and (REPO / name).is_file():
            text = (REPO / name).read_text()
            for first, more in re.findall(r"docs/science\.md#([\w-]+)((?: and #[\w-]+)*)", text):
                for anchor in [first, *re.findall(r"#([\w-]+)", more)]:
                    if anchor not in science:
                        broken.append(f"{name}: docs/science.md#{anchor}")
    assert broken == []


def test_nothing_cites_the_missing_science_file() -> None:
    out = subprocess.run(["git", "grep", "-l", "SCIENCE.md", "--", ".", ":!tests/test_docs.py"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.stdout.split() == []


def test_python_examples_run(tmp_path: Path) -> None:
    """docs' Python blocks against a workspace holding a finished ba_graph experiment."""
    from scaling_db.store.ingest import ingest_runs
    from store_fakes import finish_runs, make_workspace

    ws, manifests = make_workspace(tmp_path / "scaledb-workspace")
    finish_runs(ws, manifests)
    ingest_runs(ws)
    code = [text for path in DOCS[1:] for text in tagged(path, "python")]
    assert code
    for text in code:
        out = subprocess.run([sys.executable, "-c", text], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.reference
@pytest.mark.slow
def test_reference_examples_run(tmp_path: Path) -> None:
    shared_path("data", "reference")
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")  # the docs' ../shared, relative to the repo
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SCALEDB_WORKSPACE", None)
    scripts = [text for path in DOCS[1:] for text in tagged(path, "reference")]
    assert scripts
    for text in scripts:
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=work, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    listed = subprocess.run(["bash", "-c", "scaledb query runs_by_status --format csv"], cwd=work, env=env,
                            capture_output=True, text=True)
    assert {"datablations", "misfitting", "marin_dclm", "gadre"} <= set(re.findall(r"^(\w+),", listed.stdout, re.M))
