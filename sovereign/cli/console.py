"""Terminal output shared by every `sovereign` command area: one-line errors, no tracebacks."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print `error: <cause>` on one line to stderr and exit with `code`."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)
