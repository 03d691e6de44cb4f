"""Errors that are the user's to fix: the CLI prints them without a traceback."""


class SamdskError(Exception):
    """A problem with the user's input (a file, a setting), stated so the user can fix it."""


class DatasetError(SamdskError):
    """The dataset cannot be read at all (no dataset.json, malformed JSON, unknown layout)."""
