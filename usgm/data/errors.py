"""Exceptions for bad dataset input."""


class DataError(ValueError):
    """Bad dataset input; the message names the file, column or key."""
