"""Exceptions the CLI turns into one-line messages and exit codes (2: bad usage or config; docs/architecture.md)."""


class ConfigError(Exception):
    """Bad manifest, labels, options or weights: the run cannot start. Message names file and fix."""


class ClipError(Exception):
    """One clip cannot be embedded (corrupt video, no video stream...). Recorded, never fatal."""
