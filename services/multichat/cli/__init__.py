"""The `multichat` command: one typer app, one small function per subcommand.

Each command parses its options and hands over to the module that does the work; errors a
person can fix are printed as one line with no traceback, and a non-zero exit.
"""

from __future__ import annotations

import sys

from .app import app, unwrap_help

# Each module registers its commands on the app as it is imported: in --help's order.
# isort: off
from . import hosting  # noqa: F401
from . import connect  # noqa: F401
from . import moderation  # noqa: F401
from . import export  # noqa: F401

# isort: on

unwrap_help(app)


def main() -> None:
    """The console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
