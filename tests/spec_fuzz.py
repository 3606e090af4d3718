"""Hostile and randomly generated specs, and a runner that feeds them to the CLI in isolation.

Used by tests/test_fuzz_specs.py (a small, fixed budget for CI) and benchmarks/fuzz_specs.py
(thousands of cases). Each case runs `scaledb validate` and then `scaledb compile --dry-run` in a
forked child of the current process (imports already paid for) under a memory cap
(RLIMIT_AS) and a wall-clock cap; the parent kills it if it hangs. The acceptable outcomes
are "valid" (both commands exit 0) and "error" (both exit 1 with only `Error: ` lines);
anything else (a traceback, a hang, a crash, a message showing interpreter internals, or
validate and compile disagreeing) is a finding.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GOOD_OUTCOMES = ("valid", "error")
BASE = """\
experiment: fuzz
data:
  kind: graph_walk
  graph: {kind: barabasi_albert, n: 50, m: 2, seed: 0}
model:
  kind: transformer
  n_layers: 1
  d_model: 16
  context: 8
train:
  optimizer: {kind: adamw, lr: 1.0e-2}
  batch_size: 4
  tokens: 2000
  checkpoints: {kind: linear, count: 3}
  eval_tokens: 256
"""
_SWEEP = "sweep:\n  axes:\n    model.d_model: [16, 32]\n"


def _with(text: str) -> str:
    return BASE + text


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{BASE}description: *a{levels - 1}\n"


def _derive(expr: str) -> str:
    return _with(f"{_SWEEP}  derive:\n    model.n_layers: \"{expr}\"\n")


def _constraint(expr: str) -> str:
    return _with(f"{_SWEEP}  constraints:\n    - {{drop_if: \"{expr}\", reason: r}}\n")


#: name -> spec text (str or bytes). `{dir}` is replaced by the case's folder.
HOSTILE: dict[str, str | bytes] = {
    # numbers that are not numbers
    "nan_kappa": BASE.replace("  graph:", "  kappa: .nan\n  graph:"),
    "inf_lr": BASE.replace("lr: 1.0e-2", "lr: .inf"),
    "inf_tokens": BASE.replace("tokens: 2000", "tokens: .inf"),
    "huge_tokens": BASE.replace("tokens: 2000", "tokens: 1e308"),
    "huge_int_literal": BASE.replace("tokens: 2000", "tokens: 1" + "0" * 5000),
    "bool_batch": BASE.replace("batch_size: 4", "batch_size: true"),
    "quoted_lr": BASE.replace("lr: 1.0e-2", "lr: '1e3'"),
    "quoted_axis_value": _with("sweep:\n  axes:\n    model.d_model: ['1e3', 16]\n"),
    "nan_variable": _with("sweep:\n  vars: [c]\n  axes:\n    c: [.nan, 1]\n"),
    "mapping_variable": _with("sweep:\n  vars: [c]\n  axes:\n    c: [{a: 1}]\n"),
    # structure
    "nested_1000": _with(f"resources: {_nested(1000)}\n"),
    "nested_100": _with(f"description: {_nested(100)}\n"),
    "recursive_alias": BASE.replace("  graph:", "  kappa: &r [*r]\n  graph:"),
    "recursive_alias_map": _with("resources: &m {a: *m}\n"),
    "billion_laughs": _laughs(),
    "duplicate_key": BASE.replace("  batch_size: 4\n", "  batch_size: 4\n  batch_size: 8\n"),
    "complex_key": _with("? [a, b]\n: 1\n"),
    "int_key": _with("1: x\n"),
    "nul_byte": BASE.replace("kind: transformer", "kind: transf\0ormer").encode(),
    "control_char": BASE.replace("kind: transformer", "kind: transf\x07ormer"),
    "python_tag": _with("description: !!python/object/apply:os.system ['true']\n"),
    "set_tag": _with("tags: !!set {a, b}\n"),
    "date_value": _with("description: 2024-01-01\n"),
    "not_a_mapping": "[1, 2, 3]\n",
    "empty": "",
    "latin1": "experiment: caf\xe9\n".encode("latin-1"),
    "huge_file": BASE + "# " + "x" * 200_000 + "\n",
    "seeds_million": _with("sweep:\n  seeds: [" + ", ".join(["0"] * 1_000_000) + "]\n"),
    "seeds_large_list": _with("sweep:\n  seeds: [" + ", ".join(str(i) for i in range(20_000)) + "]\n"),
    # extends
    "extends_environ": "extends: /proc/self/environ\n" + BASE,
    "extends_zero": "extends: /dev/zero\n" + BASE,
    "extends_urandom": "extends: /dev/urandom\n" + BASE,
    "extends_zero_yaml": "extends: {dir}/zero.yaml\n" + BASE,
    "extends_fifo": "extends: {dir}/fifo.yaml\n" + BASE,
    "extends_dir": "extends: {dir}/folder.yaml\n" + BASE,
    "extends_self": "extends: spec.yaml\n" + BASE,
    "extends_number": "extends: 5\n" + BASE,
    "extends_nul": 'extends: "a\\0b.yaml"\n' + BASE,
    # expressions
    "derive_dunder": _derive("model.__class__.__bases__"),
    "derive_globals": _derive("model.__init__.__globals__"),
    "derive_power_tower": _derive("10**10**10"),
    "derive_9_9_9": _derive("9**9**9"),
    "derive_10_400": _derive("10**400"),
    "derive_float_overflow": _derive("10.0**400"),
    "derive_exp_overflow": _derive("exp(1000)"),
    "derive_list_repeat": _derive("[1]*10**10"),
    "derive_str_repeat": _derive("'a'*10**10"),
    "derive_format": _derive("'%0999999999d' % 1"),
    "derive_sum_100k": _derive("+".join(["1"] * 100_000)),
    "derive_deep_parens": _derive("(" * 150 + "1" + ")" * 150),
    "derive_deep_unary": _derive("-" * 400 + "1"),
    "derive_string_result": _derive("'abc'"),
    "derive_complex": _derive("(-8) ** 0.5"),
    "derive_div_zero": _derive("1 / 0"),
    "derive_log_domain": _derive("log(-1)"),
    "derive_round_digits": _derive("round(5, -10**9)"),
    "derive_lambda": _derive("(lambda: 1)()"),
    "derive_section": _derive("model"),
    "constraint_power_tower": _constraint("10**10**10 > 1"),
    "constraint_9_9_9": _constraint("9**9**9 > 1"),
    "counts_bad_inputs": BASE.replace("  d_model: 16\n", "  d_model: 16\n  mlp_ratio: [1]\n").replace(
        "context: 8", "context: 10000000000") + "sweep:\n  derive:\n    train.tokens: 20 * n_params\n",
    "counts_string_inputs": BASE.replace("batch_size: 4", "batch_size: 'a'").replace(
        "context: 8", "context: 10000000000") + "sweep:\n  derive:\n    train.tokens: 20 * tokens_per_step\n",
    "derive_sum_20k": _derive("+".join(["1"] * 20_000)),
    # sweeps
    "axis_below_scalar": _with("sweep:\n  axes:\n    model.d_model.x: [1, 2]\n"),
    "axis_typo_section": _with("sweep:\n  axes:\n    trian.tokens: [1000, 2000]\n"),
    "axis_bare_section": _with("sweep:\n  axes:\n    model: [1, 2]\n"),
    "axis_undeclared_variable": _with("sweep:\n  axes:\n    flop_budget: [1, 2]\n"),
    "axis_empty_part": _with("sweep:\n  axes:\n    model..d_model: [16]\n"),
    "sweep_10_million": _with("sweep:\n  axes:\n    train.optimizer.lr: {geomspace: [1.0e-4, 1.0e-1], num: 10000000}\n"),
    "sweep_product_huge": _with("sweep:\n  axes:\n    model.d_model: {linspace: [16, 64], num: 1000, integer: true}\n"
                                "    train.optimizer.lr: {geomspace: [1.0e-4, 1.0e-1], num: 100000}\n"),
    "sweep_num_1e300": _with("sweep:\n  axes:\n    train.optimizer.lr: {geomspace: [1.0e-4, 1.0e-1], num: 1e300}\n"),
    "checkpoints_1e9": BASE.replace("{kind: linear, count: 3}", "{kind: linear, count: 1e9}"),
    "checkpoints_2_63": BASE.replace("{kind: linear, count: 3}", "{kind: log, count: 9223372036854775808}"),
    "seed_2_64": _with("sweep:\n  seeds: [18446744073709551616]\n"),
    "zip_unequal_huge": _with("sweep:\n  zip:\n    - {model.d_model: {linspace: [16, 64], num: 3},"
                              " train.optimizer.lr: {geomspace: [1.0e-4, 1.0e-1], num: 100000000}}\n"),
    # names and analysis
    "long_name": BASE.replace("experiment: fuzz", "experiment: " + "n" * 300),
    "query_empty": _with("analysis:\n  fits:\n    - {name: f, law: power_law, query: ''}\n"),
    "query_number": _with("analysis:\n  fits:\n    - {name: f, law: power_law, query: '64'}\n"),
    "query_escape": _with("analysis:\n  fits:\n    - {name: f, law: power_law, query: '../../etc/passwd'}\n"),
    "query_escape_sql": _with("analysis:\n  fits:\n    - {name: f, law: power_law, query: '../../x.sql'}\n"),
    "query_missing_sql": _with("analysis:\n  fits:\n    - {name: f, law: power_law, query: 'nope.sql'}\n"),
    "query_unknown": _with("analysis:\n  fits:\n    - {name: f, law: power_law, query: final_los}\n"),
    "x_empty": _with("analysis:\n  fits:\n    - {name: f, law: power_law, x: ['']}\n"),
}


def _prepare(folder: Path) -> None:
    """The special files some hostile cases point at."""
    (folder / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo.yaml")
    (folder / "folder.yaml").mkdir()


# ------------------------------------------------------------------------------------------
# Generated specs: values drawn over the spec's JSON Schema, plus hostile mutations
# ------------------------------------------------------------------------------------------

_HOSTILE_SCALARS: list[Any] = [
    float("nan"), float("inf"), -float("inf"), 1e308, -1, 0, True, False, None, "", "1e3", "64", "x" * 300,
    2**63, 2**64, -(2**63) - 1, 10**30, [], {}, [1, [2, [3]]], {"kind": "nope"}, "\u202e", 0.5, 1e-320,
]
_EXPRESSIONS = [
    "model.d_model // 16", "20 * n_params_nonembed", "max(1, round(c / (6 * n_params * tokens_per_step)))",
    "10**10**10", "9**9**9", "[1]*10**10", "'a'*10**10", "'%0999999999d' % 1", "model.__class__", "c ** 0.5",
    "log(0)", "1/0", "n_params > 1e6", "model.kind == 'transformer'", "sqrt(-1)", "int(1e300)", "flops_per_token_exact",
    "model.d_model in [16, 32]", "not c", "c if c > 2 else 1", "min()", "round(1.5, 99)", "float(c) * 1e308 * 10",
]
_QUERIES = ["final_loss", "loss_curves", "", "64", "../../etc/passwd", "nope", "queries/final_loss.sql", "/etc/passwd.sql"]


class SchemaSampler:
    """Draws spec data over the JSON Schema: mostly valid values, sometimes hostile ones."""

    def __init__(self, rng: random.Random, hostile: float = 0.05):
        from scaling_db.spec.schema import spec_json_schema

        self.rng, self.hostile = rng, hostile
        self.schema = spec_json_schema()

    def _ref(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def value(self, node: dict[str, Any], depth: int = 0) -> Any:
        rng = self.rng
        if rng.random() < self.hostile:
            return rng.choice(_HOSTILE_SCALARS)
        node = self._ref(node)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return rng.choice(node["enum"])
        options = node.get("oneOf") or node.get("anyOf")
        if options:
            return self.value(rng.choice(options), depth)
        kind = node.get("type")
        if kind == "object" or "properties" in node:
            return self.mapping(node, depth)
        if kind == "array":
            items = node.get("prefixItems") or [node.get("items", {})] * rng.randint(1, 3)
            return [self.value(i, depth + 1) for i in items]
        if kind in ("integer", "number"):
            return self.number(node, kind == "integer")
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return rng.choice(["a", "fuzz", "x_1", "1.0", "final_loss"])

    def number(self, node: dict[str, Any], integer: bool) -> float | int:
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        high = node.get("maximum", node.get("exclusiveMaximum", 64 if integer else 1))
        high = min(high, low + (64 if integer else 1))
        if integer:
            return self.rng.randint(int(low) + ("exclusiveMinimum" in node), max(int(low) + 1, int(high) - 1))
        return round(self.rng.uniform(low, high) or 0.5, 4) or 0.5

    def mapping(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        props, required = node.get("properties", {}), set(node.get("required", []))
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or "const" in self._ref(sub) or (depth < 3 and self.rng.random() < 0.3):
                out[name] = self.value(sub, depth + 1)
        if self.rng.random() < self.hostile:
            out[self.rng.choice(["d_modle", "kind", "lr", "x"])] = self.rng.choice(_HOSTILE_SCALARS)
        return out


def generated_spec(rng: random.Random, hostile: float = 0.03) -> str:
    """A spec drawn over the schema: a compatible data/model/train triple, a small sweep,
    expressions and analysis from pools, then maybe a text-level mutation. Each choice is
    hostile with a small probability, so that about half the specs compile."""
    sampler = SchemaSampler(rng, hostile)
    defs = sampler.schema["$defs"]

    def pick(valid: list[Any], bad: list[Any]) -> Any:
        return rng.choice(bad if rng.random() < 2 * hostile else valid)

    family = rng.choice([
        (["GraphWalkData", "LanguageBigramData", "CorpusData", "TeacherLMData"], "TransformerModel", "LMTrain"),
        (["RandomFeaturesData"], "RandomFeaturesModel", "ClosedFormTrain"),
        (["PercolationData"], "NearestNeighborModel", "ClosedFormTrain"),
    ])
    spec: dict[str, Any] = {"experiment": pick(["fuzz", "f-1.x", "x" * 100], ["x" * 101, "a b", ""])}
    spec["data"] = sampler.mapping(defs[rng.choice(family[0])], 1)
    spec["model"] = sampler.mapping(defs[family[1]], 1)
    spec["train"] = sampler.mapping(defs[family[2]], 1)
    if family[1] == "TransformerModel" and rng.random() < 0.9:
        spec["model"].update(d_model=16 * rng.randint(1, 4), d_head=16, n_heads=None)
        spec["train"].pop("steps", None)
        spec["train"]["tokens"] = rng.choice([1000, 5000, 1e5])
    spec["sweep"] = _sweep(rng, family[1] == "TransformerModel", pick)
    if rng.random() < 0.3:
        spec["analysis"] = {"fits": [{"name": "f", "law": "power_law", "query": pick(_QUERIES[:2], _QUERIES[2:]),
                                      "x": [pick(["n_params", "tokens"], ["", "1x", "a b"])]}]}
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    return mutate_text(rng, text) if rng.random() < 5 * hostile else text


def _sweep(rng: random.Random, transformer: bool, pick: Callable[[list[Any], list[Any]], Any]) -> dict[str, Any]:
    paths = ["model.d_model", "train.optimizer.lr", "train.batch_size"] if transformer else [
        "train.samples", "data.seed"]
    values = {"model.d_model": [16, 32, 48], "train.optimizer.lr": [0.01, 0.001], "train.batch_size": [2, 4],
              "train.samples": [10, 20], "data.seed": [0, 1], "model.n_features": [5, 10], "c": [1.0e9, 2, "a"]}
    sweep: dict[str, Any] = {"axes": {}, "vars": ["c"]}
    for path in rng.sample(paths + ["c"], rng.randint(0, 2)):
        key = pick([path], ["trian.tokens", "model", "model.d_model.x", "flop_budget", "data..seed"])
        sweep["axes"][key] = [pick(values.get(path, [1]), ["16", True, float("nan"), [1], None])
                              for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        sweep["seeds"] = [pick([0, 1, 2, 3], [-1, 2**63, "1", True]) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.4:
        target = pick(["model.n_layers", "train.tokens", "c"] if transformer else ["c"], ["d", "trian.x", "n_params"])
        sweep["derive"] = {target: pick(_EXPRESSIONS[:3], _EXPRESSIONS[3:]) if transformer else pick(["2", "3.5"], _EXPRESSIONS)}
    if "c" not in sweep["axes"] and "c" not in sweep.get("derive", {}):
        sweep.pop("vars")
    if rng.random() < 0.3:
        sweep["constraints"] = [{"drop_if": pick(["n_params > 1e9", "n_params < 0"], _EXPRESSIONS), "reason": "fuzz"}]
    return sweep


def mutate_text(rng: random.Random, text: str) -> str:
    """One text-level mutation: duplicate, drop or re-indent a line, or insert something hostile."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    choice = rng.randrange(6)
    if choice == 0:
        lines.insert(i, lines[i])
    elif choice == 1:
        del lines[i]
    elif choice == 2:
        lines[i] = " " + lines[i]
    elif choice == 3:
        lines[i] += rng.choice([" &a", " *a", " !!set", ": :", " #", "\t", "\0", " {", "'"])
    elif choice == 4:
        lines.insert(i, rng.choice(["x: &a [*a]", "<<: {}", "? [1]", "--- ", "...", "%YAML 1.1", "y: !!binary AAAA"]))
    else:
        key, sep, _ = lines[i].partition(":")
        if sep:
            lines[i] = f"{key}: {json.dumps(rng.choice(_HOSTILE_SCALARS), allow_nan=True)}"
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Running one case in a forked, capped child
# ------------------------------------------------------------------------------------------

# What interpreter internals look like in a message (a user's own expression may contain `__x__`).
_LEAK = re.compile(r"<(function|module|class|built-in|bound method)|object at 0x|'__name__':|Traceback")


@dataclass(frozen=True)
class CaseResult:
    name: str
    outcome: str  # valid | error | traceback | hang | crash | memory | bad-message | disagree
    detail: str
    seconds: float
    extra_rss_mb: float


def _classify(result: Any) -> tuple[str, str]:
    exc = result.exception
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError"
    if exc is not None and not isinstance(exc, SystemExit):
        return "traceback", f"{type(exc).__name__}: {str(exc)[:300]}"
    if result.exit_code == 0:
        return "valid", ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == 1 and lines and all(line.startswith("Error: ") for line in lines) \
            and not _LEAK.search(result.output):
        return "error", lines[0][:300]
    return "bad-message", f"exit {result.exit_code}: {result.output[-300:]}"


def _child(spec: Path, workspace: Path) -> dict[str, Any]:
    from click.testing import CliRunner

    from scaling_db.cli import cli

    runner = CliRunner()
    outcomes = []
    for args in (["validate", str(spec)], ["compile", str(spec), "--dry-run", "-w", str(workspace)]):
        outcomes.append(_classify(runner.invoke(cli, args)))
    (a, why_a), (b, why_b) = outcomes
    if a not in GOOD_OUTCOMES:
        return {"outcome": a, "detail": "validate: " + why_a}
    if b not in GOOD_OUTCOMES:
        return {"outcome": b, "detail": "compile: " + why_b}
    if a != b:
        return {"outcome": "disagree", "detail": f"validate {a} ({why_a}), compile {b} ({why_b})"}
    return {"outcome": a, "detail": why_a}


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_case(name: str, text: str | bytes, folder: Path, timeout_s: float = 10.0,
             memory_bytes: int = 1 << 30) -> CaseResult:
    """Run validate and compile --dry-run on one spec text in a forked child with caps."""
    folder.mkdir(parents=True, exist_ok=True)
    _prepare(folder)
    spec = folder / "spec.yaml"
    if isinstance(text, str):
        text = text.replace("{dir}", str(folder)).encode("utf-8", "surrogatepass")
    spec.write_bytes(text)
    read_fd, write_fd = os.pipe()
    base_rss = _rss_kb()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: cap memory, run both commands, report, and leave at once
        os.close(read_fd)
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + memory_bytes, resource.RLIM_INFINITY))
            report = _child(spec, folder / "ws")
        except MemoryError:
            report = {"outcome": "memory", "detail": "MemoryError outside the CLI"}
        except BaseException as exc:  # noqa: BLE001 (anything at all is a finding, reported)
            report = {"outcome": "crash", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
        try:
            os.write(write_fd, json.dumps(report).encode()[:60_000])
        finally:
            os._exit(code)
    os.close(write_fd)
    return _collect(name, pid, read_fd, start, timeout_s, base_rss)


def _collect(name: str, pid: int, read_fd: int, start: float, timeout_s: float, base_rss: int) -> CaseResult:
    chunks: list[bytes] = []
    hung = False
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            left = start + timeout_s - time.monotonic()
            if left <= 0:
                hung = True
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if ready:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    if hung:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - start
    extra_mb = max(0.0, (usage.ru_maxrss - base_rss) / 1024)
    if hung:
        return CaseResult(name, "hang", f"killed after {timeout_s:g} s", seconds, extra_mb)
    if not chunks:
        why = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        return CaseResult(name, "crash", f"child died without a report ({why})", seconds, extra_mb)
    report = json.loads(b"".join(chunks))
    return CaseResult(name, report["outcome"], report["detail"], seconds, extra_mb)


def run_cases(cases: list[tuple[str, str | bytes]], root: Path, timeout_s: float = 10.0,
              progress: Callable[[CaseResult], None] | None = None) -> list[CaseResult]:
    results = []
    for i, (name, text) in enumerate(cases):
        result = run_case(name, text, root / f"case{i}", timeout_s)
        if progress:
            progress(result)
        results.append(result)
    return results
