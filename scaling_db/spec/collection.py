"""Several specs at once: folders expanded, and the specs put in the order their analyses need.

`scaledb reproduce specs/gallery/` takes a folder: every `.yaml`/`.yml` file directly in it is a
spec (bases shared through `extends:` live in a subfolder, so they are not run on their own).
A spec whose analysis reads other experiments' runs (`analysis.experiments`) comes after the
specs that produce them; otherwise the order is the files' sorted order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scaling_db.errors import SpecError, SpecProblem
from scaling_db.spec.loader import read_spec_source

SPEC_SUFFIXES = (".yaml", ".yml")


def expand_spec_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as their spec files in sorted order; a folder without specs is an error."""
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
            if not found:
                raise SpecError(str(path), [SpecProblem(str(path), None, "", "a folder without spec files (*.yaml, *.yml)")])
            out += found
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def order_by_dependency(paths: Sequence[Path], *, smoke: bool = False) -> list[Path]:
    """`paths` with every spec after the specs whose experiments its analysis reads (stable otherwise)."""
    produces: dict[str, Path] = {}
    needs: dict[Path, set[str]] = {}
    for path in paths:
        data = read_spec_source(path, smoke=smoke).data
        produces.setdefault(str(data.get("experiment")), path)
        analysis = data.get("analysis") if isinstance(data.get("analysis"), dict) else {}
        experiments = analysis.get("experiments") or []
        needs[path] = {str(e) for e in experiments if isinstance(e, str)} - {str(data.get("experiment"))}
    ordered: list[Path] = []
    pending = list(paths)
    while pending:
        ready = next((p for p in pending if all(produces.get(e) in (None, p, *ordered) for e in needs[p])),
                     pending[0])  # a cycle among analyses: keep the given order rather than refuse
        ordered.append(ready)
        pending.remove(ready)
    return ordered
