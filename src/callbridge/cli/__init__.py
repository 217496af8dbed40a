"""The `callbridge` command line, one module per concept:

    root     the app that mounts every command; `main` is the installed `callbridge` (and `python -m callbridge`)
    common   exit codes, bad input as one line on stderr, the connection flags of the HTTP commands
    serve    `callbridge serve`: SIP + HTTP on uvicorn, SIGTERM drain
    admin    `callbridge admin ...`: the directory in the database, and the operation file (`admin load`)
    agent    `callbridge agent ...`: the agentbox verbs through the client
    live     `callbridge calls` and `callbridge events`: live views through the native API
    demo     `callbridge demo` (demo_world: what it starts, demo_steps: the scenario, demo_report: what it prints)
"""

from callbridge.cli.root import app, main

__all__ = ["app", "main"]
