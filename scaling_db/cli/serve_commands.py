"""`scaledb serve`: the live, read-only dashboard over a workspace (needs the `serve` extra)."""

from __future__ import annotations

import os
import socket

import click

from scaling_db.cli import cli
from scaling_db.cli.common import get_workspace, workspace_option
from scaling_db.errors import ScaledbError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), so the URL printed is the one served, and
    connections made as soon as it is printed wait in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ScaledbError(f"serve: cannot listen on {host}:{port} ({exc.strerror}). "
                           "Pick another --port (0 takes any free one).") from None
    return sock


@cli.command()
@workspace_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets other machines read the workspace.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port (0: any free port).")
@click.option("--allow-files", is_flag=True,
              help="Let SQL on the SQL page read files (read_csv, ...); refused by default.")
@click.option("--refresh", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Seconds between rescans of the run files.")
def serve(workspace: str | None, host: str, port: int, allow_files: bool, refresh: float) -> None:
    """Serve a live, read-only dashboard of the workspace: experiments, runs, curves, figures, fits, SQL."""
    from scaling_db.store.database import LOCK_TIMEOUT_ENV

    try:
        import uvicorn

        from scaling_db.serve.app import ServeSettings, create_app
    except ImportError as exc:
        raise ScaledbError(f"serve: the dashboard needs the `serve` extra ({exc}). "
                           "Install it with: pip install 'scaledb[serve]'") from None
    ws = get_workspace(workspace)
    if not ws.root.is_dir():
        raise ScaledbError(f"serve: {ws.root}: no such workspace directory. Pass --workspace, or compile a spec first.")
    # The dashboard only reads and must never wait on the database lock (a run or an ingest is
    # writing): every open tries once, and the page shows the run files instead.
    os.environ[LOCK_TIMEOUT_ENV] = "0"
    app = create_app(ServeSettings(workspace=ws, allow_files=allow_files, refresh_s=refresh))
    if host not in LOOPBACK:
        click.echo(f"Warning: serving on {host}: anyone who can reach this machine can read the workspace "
                   "and run read-only SQL on it. There is no authentication.", err=True)
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"Serving {ws.root} at http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", err=False)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
