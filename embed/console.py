"""Terminal output shared by both stages' CLIs: logs and errors on stderr, results on stdout."""

from __future__ import annotations

import json
import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from embed.memory import apply_gc_policy

err = Console(stderr=True)


def setup_logging(quiet: bool = False, json_lines: bool = False) -> None:
    """Logs on stderr: for a person (rich), or with `json_lines` one JSON object per line for a log
    collector (time, level, logger, message)."""
    handler: logging.Handler = RichHandler(console=err, show_path=False, show_time=False)
    if json_lines:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, format="%(message)s", handlers=[handler], force=True
    )


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit (docs/architecture.md: 2 = bad usage or config)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_app(app: typer.Typer) -> None:
    """Run a CLI: Ctrl-C anywhere exits 130 without a traceback (a run in progress prints its own
    summary first). Also when Python wrapped the KeyboardInterrupt in another exception: 3.11 does
    so when it lands in a class's __set_name__ during an import, as a CI run of ours once saw. The
    collector's policy (embed.memory) is set first: the commands import torch lazily."""
    apply_gc_policy()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if _caused_by_interrupt(e):
            sys.exit(130)
        raise


def _caused_by_interrupt(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
