"""Writing files the way long jobs must: a reader (or a resumed run) never sees half of one under its final name.
Whole folders: `training_utils.save_atomically`; PNG images: `imaging.save_png`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """`text` into `path` through a sibling temporary file that then replaces it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """`target` as a hard link to `source` (no second copy of a large image on disk), or a copy where links cannot
    be made (another file system, or one without them). Either way `target` holds `source`'s bytes; a link shares
    them, so write a new file rather than editing one in place."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return Path(target)
