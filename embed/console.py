"""Terminal output shared by both stages' CLIs: logs and errors on stderr, results on stdout."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

err = Console(stderr=True)


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)], force=True)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit (docs/architecture.md: 2 = bad usage or config)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
