"""`python -m sovereign.cli`: the same as the `sovereign` command."""

from sovereign.cli import app

app()
