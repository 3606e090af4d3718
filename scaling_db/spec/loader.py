"""Reading spec files: YAML with line numbers, `extends:` inheritance, and error reporting.

Every value keeps the file and line it came from, so a validation problem anywhere (in the
base spec, the child, a sweep axis or a derived value) is reported as `file:line field: what`.
"""

from __future__ import annotations

import difflib
import functools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scaling_db.errors import SpecError, SpecProblem

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but `1e9` and `1.0e9` are floats (YAML 1.2), not strings."""

    yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass
class SpecSource:
    """A spec file's merged raw data with the origin (file, line) of every value."""

    path: Path
    data: dict[str, Any]
    lines: dict[Path_, tuple[str, int]] = field(default_factory=dict)

    def where(self, path: Path_) -> tuple[str, int | None]:
        """The file and line of `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            hit = self.lines.get(path[:cut])
            if hit:
                return hit
        return (display_path(self.path), None)

    def problem(self, path: Path_, message: str, field_name: str | None = None) -> SpecProblem:
        file, line = self.where(path)
        return SpecProblem(file, line, field_name if field_name is not None else dotted(path), message)


def display_path(path: Path) -> str:
    """The path as the user most likely typed it: relative to the cwd when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _read_yaml(path: Path, referrer: SpecProblem | None) -> tuple[dict[str, Any], dict[Path_, tuple[str, int]]]:
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problem = referrer or SpecProblem(shown, None, "", "file not found")
        if referrer:
            problem.message = f"file not found: {shown}"
        raise SpecError(problem.file if referrer else shown, [problem]) from None
    except OSError as exc:
        raise SpecError(shown, [SpecProblem(shown, None, "", f"cannot read file ({exc.strerror})")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        msg = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}). Save the file as UTF-8."
        raise SpecError(shown, [SpecProblem(shown, line, "", msg)]) from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise SpecError(shown, [SpecProblem(shown, line, "", f"YAML syntax error: {what}")]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SpecError(shown, [SpecProblem(shown, 1, "", f"a spec must be a YAML mapping (got {got})")])
    lines: dict[Path_, tuple[str, int]] = {}
    _collect_lines(node, (), shown, lines)
    return data, lines


def _collect_lines(node: yaml.Node, path: Path_, file: str, out: dict[Path_, tuple[str, int]]) -> None:
    out[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            _collect_lines(value, sub, file, out)
            out[sub] = (file, key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(item, (*path, i), file, out)


def _merge(base: Any, over: Any) -> Any:
    """Child values override base values; mappings merge key by key unless their `kind` differs."""
    if isinstance(base, dict) and isinstance(over, dict):
        if "kind" in over and base.get("kind") != over["kind"]:
            return over
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return over


def read_spec_source(path: str | Path, _stack: tuple[Path, ...] = (), _referrer: SpecProblem | None = None) -> SpecSource:
    """Read a spec file and everything it `extends`, merged, with line numbers."""
    path = Path(path)
    resolved = path.resolve()
    data, lines = _read_yaml(path, _referrer)
    parent = data.pop("extends", None)
    if parent is None:
        return SpecSource(path, data, lines)
    here = lines.get(("extends",), (display_path(path), 0))
    if not isinstance(parent, str):
        raise SpecError(here[0], [SpecProblem(here[0], here[1], "extends", f"must be a file path (got {parent!r})")])
    parent_path = (path.parent / parent)
    if parent_path.resolve() in (*_stack, resolved):
        chain = " -> ".join(display_path(p) for p in (*_stack, resolved, parent_path.resolve()))
        raise SpecError(here[0], [SpecProblem(here[0], here[1], "extends", f"cycle: {chain}")])
    ref = SpecProblem(here[0], here[1], "extends", "")
    base = read_spec_source(parent_path, (*_stack, resolved), ref)
    merged_lines = dict(base.lines)
    merged_lines.update(lines)
    return SpecSource(path, _merge(base.data, data), merged_lines)


# ---------------------------------------------------------------------------------------------
# Turning Pydantic errors into spec problems
# ---------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A value as shown in a message: short, and only plain data (never an object's repr)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 100 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, (str, dict, list, tuple)) or value is None:
        text = repr(value) if _plain(value) else f"a {type(value).__name__}"
        return text if len(text) < 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether `value` is YAML-like data small enough to show (bounded, so cheap on anything)."""
    if depth > 5:
        return False
    if isinstance(value, dict):
        return len(value) < 20 and all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return len(value) < 20 and all(_plain(v, depth + 1) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() < 100
    return value is None or isinstance(value, (str, float, bool))


def candidate_models(annotation: Any) -> list[type[BaseModel]]:
    """BaseModel classes an annotation can hold (unwrapping Annotated, Optional and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return candidate_models(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [m for arg in typing.get_args(annotation) for m in candidate_models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _container_item(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _container_item(typing.get_args(annotation)[0])
    if origin in (list, tuple):
        return typing.get_args(annotation)[0] if typing.get_args(annotation) else Any
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(annotation):
            item = _container_item(arg)
            if item is not None:
                return item
    return None


@functools.lru_cache(maxsize=None)
def kind_of(model: type[BaseModel]) -> tuple[str, ...]:
    f = model.model_fields.get("kind")
    return typing.get_args(f.annotation) if f is not None else ()


def _walk_loc(root: type[BaseModel], raw: Any, loc: tuple[Any, ...]) -> tuple[Path_, type[BaseModel] | None]:
    """Map a Pydantic error location to the YAML path (dropping union tags) and the model
    class found at its end (for did-you-mean on unknown keys)."""
    path: list[str | int] = []
    models: list[type[BaseModel]] = [root]
    annotation: Any = None
    owner: type[BaseModel] | None = root
    node = raw
    for part in loc:
        if models:
            tagged = [m for m in models if part in kind_of(m)]
            if tagged and not (isinstance(node, dict) and part in node and len(models) == 1):
                models, owner = tagged[:1], tagged[0]
                continue
            if len(models) > 1 and isinstance(part, str) and not (isinstance(node, dict) and part in node):
                named = [m for m in models if m.__name__ == part]
                if named:
                    models, owner = named, named[0]
                    continue
            in_node = isinstance(node, dict) and part in node
            if isinstance(part, str) and not in_node and not any(part in m.model_fields for m in models):
                continue  # a union-branch label such as 'list', not a YAML key
            owner = models[0]
            f = owner.model_fields.get(part) if isinstance(part, str) else None
            annotation = f.annotation if f is not None else None
            path.append(part)
            node = node.get(part) if isinstance(node, dict) else None
            models = candidate_models(annotation) if annotation is not None else []
            continue
        # inside a container (list index, dict key) or a non-model union branch name
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if isinstance(node, dict) else (node[part] if part < len(node) else None)
            item = _container_item(annotation) if annotation is not None else None
            annotation = item
            models = candidate_models(item) if item is not None else []
            owner = models[0] if len(models) == 1 else owner
        # else: a union-branch label such as 'list[any]' or 'GeomRange': not a YAML key
    return tuple(path), models[0] if len(models) == 1 else owner


def problems_from_validation(
    exc: ValidationError,
    root: type[BaseModel],
    raw: dict[str, Any],
    locate: typing.Callable[[Path_], SpecProblem],
    prefix: Path_ = (),
) -> list[SpecProblem]:
    """One SpecProblem per Pydantic error, with a message in scaledb's style."""
    out: list[SpecProblem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
        if kind == "union_tag_invalid":
            # the failing element is the kind value itself; point at the mapping's `kind` key
            path, _ = _walk_loc(root, raw, tuple(err["loc"]))
            path = (*path, "kind")
        else:
            path, owner = _walk_loc(root, raw, tuple(err["loc"]))
        msg = _message(kind, ctx, got, err["msg"], path, root, raw, err["loc"])
        problem = locate((*prefix, *path))
        problem.message = msg
        key = (problem.field, msg)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


def _message(kind: str, ctx: dict, got: Any, default: str, path: Path_, root: type[BaseModel], raw: Any, loc: Any) -> str:
    if kind == "extra_forbidden":
        _, owner = _walk_loc(root, raw, tuple(loc)[:-1])
        valid = [n for n in (owner.model_fields if owner else {}) if n != "kind"]
        close = difflib.get_close_matches(str(path[-1]), valid, n=1, cutoff=0.5)
        if close:
            return f"unknown field; did you mean `{close[0]}`?"
        return f"unknown field (expected one of: {', '.join(valid)})"
    if kind == "missing":
        return "required field missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {_fmt(bound)} (got {_fmt(got)})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer (got {_fmt(got)})"
    if kind == "not_a_number":
        return default
    if kind == "finite_number":
        return f"must be a finite number (got {_fmt(got)})"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number (got {_fmt(got)})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {_fmt(got)})"
    if kind == "string_type":
        return f"must be a string (got {_fmt(got)})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {_fmt(got)})"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (got {_fmt(got)})"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} items (got {ctx.get('actual_length')})"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {_fmt(got)})"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')} (got {_fmt(got)})"
    if kind == "union_tag_invalid":
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.5)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        return f"unknown kind {ctx.get('tag')!r}{hint} (expected one of: {', '.join(tags)})"
    if kind == "union_tag_not_found":
        return f"missing `{ctx.get('discriminator', 'kind').strip(chr(39))}:` key"
    if kind == "axis_values":
        return default
    if kind == "value_error":
        return default.removeprefix("Value error, ")
    if kind == "assertion_error":
        return default.removeprefix("Assertion failed, ")
    return f"{default} (got {_fmt(got)})"
