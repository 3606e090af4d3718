"""Vendor Vega, Vega-Lite and Vega-Embed into `static/vega-bundle.js`, so the dashboard needs no CDN.

The bundle comes from the installed `vl-convert-python` (`javascript_bundle`: the three libraries
and their dependencies as one self-contained ES module), at the Vega-Lite version that the
installed Altair writes. Run after upgrading either: `python -m scaling_db.serve.vendor`.
Licences: Vega, Vega-Lite and Vega-Embed are BSD-3-Clause (University of Washington
Interactive Data Lab); the header of the file names the versions.
"""

from __future__ import annotations

from pathlib import Path

BUNDLE = Path(__file__).resolve().parent / "static" / "vega-bundle.js"
#: Exposes the bundle's imports to the page's other scripts.
_SNIPPET = "window.vegaEmbed = vegaEmbed; window.vega = vega;"


def bundle_versions() -> str:
    """The versions the bundle at hand would contain, as its header line says them."""
    import altair as alt
    import vl_convert as vlc

    return (f"vega {vlc.get_vega_version()}, vega-lite {alt.SCHEMA_VERSION.lstrip('v')}, "
            f"vega-embed {vlc.get_vega_embed_version()} (from vl-convert-python)")


def write_bundle(path: Path = BUNDLE) -> str:
    """Write the bundle; returns its header line."""
    import altair as alt
    import vl_convert as vlc

    minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    header = f"/* scaledb vendored: {bundle_versions()}. BSD-3-Clause. Regenerate: python -m scaling_db.serve.vendor */"
    path.write_text(header + "\n" + vlc.javascript_bundle(_SNIPPET, vl_version=minor))
    return header


if __name__ == "__main__":
    write_bundle()
