"""Writing files the way long jobs must: a reader (or a resumed run) never sees half of one under its final name.
Whole folders: `training_utils.save_atomically`; PNG images: `imaging.save_png`."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """`text` into `path` through a sibling temporary file that then replaces it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
