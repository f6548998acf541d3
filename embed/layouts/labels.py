"""Strict reader for label CSVs (DAiSEE's and the generic layout's): one-line errors with file:line."""

from __future__ import annotations

import csv
from pathlib import Path

from embed.errors import ConfigError


def read_label_csv(
    path: Path,
    id_column: str,
    states: list[str],
    levels: int,
    extra_columns: tuple[str, ...] = (),
    optional_columns: tuple[str, ...] = (),
) -> dict[str, dict]:
    """Rows keyed by the id column: {"labels": {state: level}, "line": n, <extra>: value}.

    Header names are stripped (DAiSEE's header really is `...,Frustration ` with a trailing space);
    a BOM and Windows line endings are accepted.
    """
    try:
        # utf-8-sig drops a BOM; newline="" lets csv handle \r\n itself.
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason}); fix: save the label file as UTF-8 CSV") from None
    if not rows:
        raise ConfigError(f"{path}: empty label file; fix: it needs a header row `{id_column},{','.join(states)}`")
    header = [h.strip() for h in rows[0]]
    needed = [id_column, *extra_columns, *states]
    for col in needed:
        if col not in header:
            raise ConfigError(
                f"{path}: line 1: no column '{col}' (header is {','.join(header)}); "
                f"fix: the header must contain {','.join(needed)}"
            )
    col = {name: header.index(name) for name in [*needed, *(c for c in optional_columns if c in header)]}
    out: dict[str, dict] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise ConfigError(f"{path}: line {lineno}: {len(row)} fields, header has {len(header)}; fix: complete the row")
        key = row[col[id_column]].strip()
        if not key:
            raise ConfigError(f"{path}: line {lineno}: empty '{id_column}'; fix: fill it in or delete the row")
        labels = {}
        for state in states:
            cell = row[col[state]].strip()
            try:
                level = int(cell)
            except ValueError:
                level = None
            if level is None or not 0 <= level < levels:
                raise ConfigError(
                    f"{path}: line {lineno}: {state} = {cell!r} is not a level 0..{levels - 1}; fix: correct the value"
                )
            labels[state] = level
        if key in out:
            raise ConfigError(
                f"{path}: line {lineno}: duplicate {id_column} {key!r} (first on line {out[key]['line']}); "
                f"fix: keep one row per clip"
            )
        out[key] = {
            "labels": labels,
            "line": lineno,
            **{c: row[col[c]].strip() for c in extra_columns},
            **{c: (row[col[c]].strip() or None) if c in col else None for c in optional_columns},
        }
    return out
