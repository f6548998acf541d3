"""Exceptions the CLI turns into one-line messages and exit codes (DESIGN.md: 2 = bad usage/config)."""


class ConfigError(Exception):
    """Bad manifest, labels, options or weights: the run cannot start. Message names file and fix."""


class ClipError(Exception):
    """One clip cannot be embedded (corrupt video, no video stream...). Recorded, never fatal."""
