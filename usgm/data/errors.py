"""Exceptions for bad dataset input."""

from __future__ import annotations


def _unwrap_worker_message(msg: str, cls: type) -> str:
    """The original message of an error re-raised from a DataLoader worker, else ``msg``.

    torch re-raises a worker's exception in the main process as ``cls(text)`` where the text is
    "Caught DataError in DataLoader worker process 0.", "Original Traceback ..." and, on the last
    line(s), ``usgm.data.errors.DataError: <message>``.
    That traceback text is not what a user needs (the message already names the file), and it would
    turn the one-line errors of ``train.py`` / ``evaluate.py`` into a page of frames.
    """
    if not msg.startswith(f"Caught {cls.__name__} in DataLoader worker") or (
        "Original Traceback" not in msg
    ):
        return msg
    qualified = f"{cls.__module__}.{cls.__qualname__}: "
    cut = msg.rfind(qualified)  # the last one: chained causes are printed first
    return msg[cut + len(qualified) :].rstrip("\n") if cut >= 0 else msg


class DataError(ValueError):
    """Bad dataset input; the message names the file, column or key.

    Raised in a DataLoader worker, it reaches the main process with its own message (the worker's
    traceback text that torch adds is dropped).
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_unwrap_worker_message(args[0], type(self)),)
        super().__init__(*args)


class SourceCountError(DataError):
    """The metadata has a different number of ``source_<k>_path`` columns than expected.

    Attributes:
        csv_path: the metadata file.
        found: source columns in the file.
        expected: the configured (or the model's) number of speakers.
    """

    def __init__(self, message: str, csv_path: str = "", found: int = 0, expected: int = 0):
        super().__init__(message)
        self.csv_path = csv_path
        self.found = found
        self.expected = expected
