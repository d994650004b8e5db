"""Where every benchmark script writes its rows: stdout, ``OUT/<name>.jsonl``, ``OUT/<name>.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(row: dict[str, Any], out: Path | None, name: str, markdown: str | None = None) -> None:
    """Prints ``row`` as one JSON line and, with ``out``, appends it to ``out/<name>.jsonl``.

    Args:
        row: the measurement.
        out: the results folder (created), or None to print only.
        name: the file stem, e.g. ``"inference"``.
        markdown: the row's Markdown table line, appended to ``out/<name>.md`` (None: none).
    """
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"{name}.jsonl").open("a") as f:
            f.write(line + "\n")
        if markdown is not None:
            with (out / f"{name}.md").open("a") as f:
                f.write(markdown + "\n")
