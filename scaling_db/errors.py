"""The exception types scaledb raises for problems a user can fix.

The library raises these; only the CLI turns them into `Error: ...` lines (one per spec
problem) and an exit code. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class ScaledbError(Exception):
    """Base class of every user-facing scaledb error."""


class SpecError(ScaledbError):
    """A spec file is invalid; carries every problem found, each with file, line and field path."""

    def __init__(self, path: str, problems: list["SpecProblem"]):
        self.path = path
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.field))
        super().__init__(self._format())

    @classmethod
    def combine(cls, errors: list["SpecError"]) -> "SpecError":
        """One error holding the problems of several files (each keeps its own file name)."""
        if len(errors) == 1:
            return errors[0]
        return cls(f"{len(errors)} spec files", [p for e in errors for p in e.problems])

    def _format(self) -> str:
        """One line per problem, each complete on its own: `file:line field: what`."""
        return "\n".join(p.format() for p in self.problems)


class SpecProblem:
    """One problem in a spec: where (file, line, dotted field path) and what."""

    __slots__ = ("file", "line", "field", "message")

    def __init__(self, file: str, line: int | None, field: str, message: str):
        self.file, self.line, self.field, self.message = file, line, field, message

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.field}: {self.message}" if self.field else f"{where} {self.message}"

    def __repr__(self) -> str:
        return f"SpecProblem({self.format()!r})"


class WorkspaceError(ScaledbError):
    """The workspace is missing, unreadable, or does not hold what was asked for."""


class DataError(ScaledbError):
    """A data source cannot be built as configured (missing corpus, too small a graph, ...)."""


class RunError(ScaledbError):
    """A run cannot be started, resumed or found."""


class RunBusy(RunError):
    """Another process holds the run's lock: it is executing the run now."""


class StoreError(ScaledbError):
    """The result database cannot be opened, written or queried as asked."""


class QueryError(StoreError):
    """A named or inline query is unknown, lacks a parameter, or fails in DuckDB."""


class FitError(ScaledbError):
    """A fit cannot be made: too few points, non-positive values in log space, no convergence."""


class PlotError(ScaledbError):
    """A figure cannot be built or exported in the asked format."""


class BackendError(ScaledbError):
    """A cluster backend (Slurm, Ray) is unreachable or rejected a submission."""
