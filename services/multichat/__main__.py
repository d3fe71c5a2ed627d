"""`python -m multichat`: the same as the `multichat` command."""

from .cli import main

main()
