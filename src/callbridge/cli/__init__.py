"""The `callbridge` command line: the root app (`root`), `serve`, `admin`, `agent`, the live views (`live`), `demo`."""

from callbridge.cli.root import app, main

__all__ = ["app", "main"]
