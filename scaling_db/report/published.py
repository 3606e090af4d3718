"""Measured numbers set beside published ones, each with a verdict a reader can check.

A spec lists the published values its results answer to (`analysis.published`: an analysis, a
quantity of its results table, the value and its source). Each is matched to the rows the
analyses produced: every group of a grouped fit, and a quantity named by its leading word
(`a` matches `a (N_opt ∝ C^a, N = n_params)`). The verdict only reads the 95% interval: the
published value inside it agrees, outside it disagrees, and without an interval nothing is
claimed. An analysis that failed, or a quantity no row has, is said so rather than skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scaling_db.report.analyses import Outcome, fmt_interval, fmt_num
from scaling_db.spec.schema import PublishedDecl


@dataclass(frozen=True)
class PublishedCheck:
    decl: PublishedDecl
    analysis: str  # the outcome's name (a grouped fit's `NAME[COL=VALUE]`)
    quantity: str  # the row's full quantity label
    estimate: float | None
    lo: float | None
    hi: float | None
    verdict: str  # agrees | disagrees | no interval | not computed

    @property
    def sentence(self) -> str:
        """The verdict in words, with the numbers it rests on."""
        pub = f"{fmt_num(self.decl.value, 3)} ({self.decl.source})"
        if self.verdict == "not computed":
            return f"Not computed, so not compared with the published {pub}."
        measured = fmt_num(self.estimate, 3)
        if self.verdict == "no interval":
            return f"Measured {measured} without an interval, so no verdict against the published {pub}."
        interval = fmt_interval(self.lo, self.hi)
        if self.verdict == "agrees":
            return f"Agrees: the published {pub} lies inside the measured 95% interval {interval}."
        ratio = f"; measured/published = {self.estimate / self.decl.value:.2g}" if self.decl.value else ""
        return f"Disagrees: the published {pub} lies outside the measured 95% interval {interval}{ratio}."


def _matches(label: str, quantity: str) -> bool:
    return label == quantity or label.startswith(quantity + " ")


def _verdict(value: float, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return "no interval"
    return "agrees" if lo <= value <= hi else "disagrees"


def check_published(decls: Sequence[PublishedDecl], outcomes: Sequence[Outcome],
                    errors: Mapping[str, str] | None = None) -> list[PublishedCheck]:
    """One check per (published value, matching result row); unmatched values say why."""
    checks = []
    for decl in decls:
        found = []
        for o in outcomes:
            if o.name != decl.analysis and not o.name.startswith(decl.analysis + "["):
                continue
            for row in o.table():
                if _matches(str(row["quantity"]), decl.quantity):
                    found.append(PublishedCheck(decl, o.name, str(row["quantity"]), row["estimate"], row["lo"],
                                                row["hi"], _verdict(decl.value, row["lo"], row["hi"])))
        if not found:
            why = (errors or {}).get(decl.analysis, f"no result row named {decl.quantity!r}")
            found.append(PublishedCheck(decl, decl.analysis, f"{decl.quantity} ({why})", None, None, None,
                                        "not computed"))
        checks.extend(found)
    return checks
