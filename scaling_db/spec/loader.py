"""Reading spec files: YAML with line numbers, `extends:` inheritance, and error reporting.

Every value keeps the file and line it came from, so a validation problem anywhere (in the
base spec, the child, a sweep axis or a derived value) is reported as `file:line field: what`.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scaling_db.errors import SpecError, SpecProblem
from scaling_db.spec.fields import number_message

Path_ = tuple[str | int, ...]


#: Limits that keep a hostile or careless file from hanging or exhausting memory. Specs are a
#: page or two of YAML (the shipped ones are under 3 KB) nested a few levels deep.
MAX_SPEC_BYTES = 64 * 1024
MAX_NESTING = 40
#: Values in the file counted after alias expansion (stops "billion laughs" alias bombs).
MAX_VALUES = 20_000
#: Digits of an integer literal (64-bit integers have at most 20).
MAX_INT_DIGITS = 40


class _LimitError(yaml.MarkedYAMLError):
    """A file that is valid YAML but exceeds a limit above (reported without "syntax error")."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML-1.2 floats (`1e9` and `1.0e9` are floats, not strings),
    dates left as strings, no `!!set`/`!!binary`/... tags, and the limits above enforced while
    composing, before anything recursive walks the document."""

    yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    yaml_constructors = dict(yaml.SafeLoader.yaml_constructors)

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._sizes: dict[str, int] = {}  # anchor -> values in its subtree, aliases expanded
        self._open: set[str] = set()  # anchors whose value is being composed

    def _count(self, n: int, mark: yaml.Mark) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            raise _LimitError(None, None, f"more than {MAX_VALUES:,} values (aliases expanded); "
                              "a spec is a page of settings, not a data file", mark)

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _LimitError(None, None, f"alias *{event.anchor} is inside the value it refers to "
                                  "(a recursive alias)", event.start_mark)
            self._count(self._sizes.get(event.anchor, 1), event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_NESTING:
            raise _LimitError(None, None, f"values nested more than {MAX_NESTING} levels deep", event.start_mark)
        before, anchor = self._values, event.anchor
        self._count(1, event.start_mark)
        self._depth += 1
        if anchor:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor)
        if anchor:
            self._sizes[anchor] = self._values - before
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise _LimitError(None, None, f"integer with more than {MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


def _refuse_tag(loader: _Loader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"{node.tag} values are not allowed in a spec", node.start_mark)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


@dataclass
class SpecSource:
    """A spec file's merged raw data with the origin (file, line) of every value."""

    path: Path
    data: dict[str, Any]
    lines: dict[Path_, tuple[str, int]] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the spec, then each base it `extends`, in that order

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
    except (ValueError, OSError):
        return str(path)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fail(shown: str, line: int | None, message: str, field_name: str = "") -> SpecError:
    return SpecError(shown, [SpecProblem(shown, line, field_name, message)])


def _read_bytes(path: Path, shown: str, referrer: SpecProblem | None) -> bytes:
    """The file's bytes, refusing anything but a small regular file (a FIFO, /dev/zero, ...)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        if referrer:
            raise SpecError(referrer.file, [SpecProblem(referrer.file, referrer.line, referrer.field,
                                                        f"file not found: {shown}")]) from None
        raise _fail(shown, None, "file not found") from None
    except (OSError, ValueError) as exc:
        raise _fail(shown, None, f"cannot read file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            what = "a directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "a special file"
            raise _fail(shown, None, f"not a spec file ({what}, not a regular file)")
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _fail(shown, None, f"cannot read file ({exc.strerror})") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > MAX_SPEC_BYTES:
        raise _fail(shown, None, f"file larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a page of settings")
    return raw


def _decode(raw: bytes, shown: str) -> str:
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise _fail(shown, line, "contains a NUL byte (a binary file?); a spec is UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        msg = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}). Save the file as UTF-8."
        raise _fail(shown, line, msg) from None


def _parse(text: str, shown: str) -> tuple[Any, dict[Path_, tuple[str, int]]]:
    """Compose the node tree (checking limits and keys), then construct the data from it."""
    lines: dict[Path_, tuple[str, int]] = {}
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # checks for characters YAML does not allow
        node = loader.get_single_node()
        if node is None:
            return None, lines
        problems = _check_nodes(node, (), shown, lines)
        if problems:
            raise SpecError(shown, problems)
        return loader.construct_document(node), lines
    except _LimitError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise _fail(shown, line, str(exc.problem)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise _fail(shown, line, f"YAML syntax error: {what}") from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise _fail(shown, line, f"contains the control character 0x{char:02x}, which YAML does not allow") from None
    except yaml.YAMLError as exc:
        raise _fail(shown, None, f"YAML error: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_yaml(path: Path, referrer: SpecProblem | None) -> tuple[dict[str, Any], dict[Path_, tuple[str, int]]]:
    shown = display_path(path)
    data, lines = _parse(_decode(_read_bytes(path, shown, referrer), shown), shown)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise _fail(shown, 1, f"a spec must be a YAML mapping (got {got})")
    # NaN and infinity are never meant, even where no field reads them (a value a sweep
    # overrides still enters the spec's hash, as JSON, which has no such numbers).
    bad = _non_finite(data, ())
    if bad:
        raise SpecError(shown, [SpecProblem(*lines.get(p, (shown, None)), dotted(p),
                                            f"must be a finite number (got {v})") for p, v in bad])
    return data, lines


def _non_finite(value: Any, path: Path_) -> list[tuple[Path_, float]]:
    """Paths and values of NaN and infinite floats (the composer's limits bound this walk)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, (*path, i))]
    return []


def _check_nodes(node: yaml.Node, path: Path_, file: str, out: dict[Path_, tuple[str, int]]) -> list[SpecProblem]:
    """Record the line of every value (into `out`); return the duplicate and non-name keys.

    Runs on the composed tree, before merge keys (`<<`) are expanded into their mappings. The
    composer's limits bound this walk (aliases are counted as expanded, recursion is refused).
    """
    problems: list[SpecProblem] = []
    out[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode) or key.tag not in (
                "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"
            ):
                shown = key.value if isinstance(key, yaml.ScalarNode) else f"a {key.id}"
                problems.append(SpecProblem(file, line, dotted(path), f"keys must be names (got {shown!r})"))
                continue
            sub = (*path, key.value)
            if key.value in seen:
                problems.append(SpecProblem(file, line, dotted(sub), f"duplicate key (first at line "
                                            f"{seen[key.value]}); YAML would keep only this one"))
            seen.setdefault(key.value, line)
            problems += _check_nodes(value, sub, file, out)
            out[sub] = (file, line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _check_nodes(item, (*path, i), file, out)
    return problems


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


#: Files in one `extends` chain (a spec, its base, the base's base, ...).
MAX_EXTENDS_DEPTH = 10


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):  # symlink loops, NUL bytes: reported on reading
        return path.absolute()


def _extends_problem(parent: Any, stack: tuple[Path, ...]) -> str | None:
    if not isinstance(parent, str) or not parent.strip():
        return f"must be the path of a base spec (got {_fmt(parent)})"
    if "\0" in parent or not parent.endswith((".yaml", ".yml")):
        return f"must be the path of a .yaml or .yml file (got {_fmt(parent)})"
    if len(stack) >= MAX_EXTENDS_DEPTH:
        return f"more than {MAX_EXTENDS_DEPTH} files in the `extends` chain"
    return None


def read_spec_source(path: str | Path, *, smoke: bool = False) -> SpecSource:
    """Read a spec file and everything it `extends`, merged, with line numbers.

    A spec may carry a `smoke:` section: a partial spec merged over the rest when `smoke` is
    asked for (a few-minute size of the same experiment, for CI), and dropped otherwise.
    """
    source = _read_chain(Path(path), (), None)
    overlay = source.data.pop("smoke", None)
    if not smoke or overlay is None:
        return source
    if not isinstance(overlay, dict):
        file, line = source.lines.get(("smoke",), (display_path(source.path), None))
        raise SpecError(file, [SpecProblem(file, line, "smoke", f"must be a mapping of spec fields (got {_fmt(overlay)})")])
    lines = dict(source.lines)
    # A value taken from `smoke:` is reported at its own line, under its field's name.
    lines.update({key[1:]: where for key, where in source.lines.items() if key[:1] == ("smoke",) and len(key) > 1})
    return SpecSource(source.path, _merge(source.data, overlay), lines, source.files)


def _read_chain(path: Path, _stack: tuple[Path, ...], _referrer: SpecProblem | None) -> SpecSource:
    resolved = _resolve(path)
    data, lines = _read_yaml(path, _referrer)
    parent = data.pop("extends", None)
    if parent is None:
        return SpecSource(path, data, lines, (path,))
    here = lines.get(("extends",), (display_path(path), 0))
    bad = _extends_problem(parent, (*_stack, resolved))
    if bad:
        raise SpecError(here[0], [SpecProblem(here[0], here[1], "extends", bad)])
    parent_path = path.parent / parent
    if _resolve(parent_path) in (*_stack, resolved):
        chain = " -> ".join(display_path(p) for p in (*_stack, resolved, _resolve(parent_path)))
        raise SpecError(here[0], [SpecProblem(here[0], here[1], "extends", f"cycle: {chain}")])
    ref = SpecProblem(here[0], here[1], "extends", "")
    base = _read_chain(parent_path, (*_stack, resolved), ref)
    merged_lines = dict(base.lines)
    merged_lines.update(lines)
    return SpecSource(path, _merge(base.data, data), merged_lines, (path, *base.files))


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
        if isinstance(got, (bool, str)):
            return number_message(got, "a number")
        return f"must be a number (got {_fmt(got)})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {_fmt(got)})"
    if kind == "string_type":
        return f"must be a string (got {_fmt(got)})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {_fmt(got)})"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (got {_fmt(got)})"
    if kind == "int_parsing_size":
        return f"must be an integer of at most 64 bits (got {_fmt(got)})"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long (got {len(got) if isinstance(got, str) else '?'})"
    if kind == "string_too_short":
        return "must not be empty"
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
