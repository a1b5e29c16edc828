"""Saving `datasets` folders the way long jobs must: never over another dataset, never half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import datasets


def refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; pick another --out or delete it first "
            "(a dataset is never written over another one)."
        )


@contextlib.contextmanager
def folder_written_atomically(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir` to fill; it becomes `out_dir` only if the block finishes (and is removed
    if it fails). `out_dir` must not exist or be empty."""
    out_dir = Path(out_dir)
    refuse_non_empty(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is not
        refuse_non_empty(out_dir)  # in case another run finished first
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_dataset_atomically(dataset: datasets.DatasetDict, out_dir: Path, extra_files: Mapping[str, str] = {},
                            progress: bool = True) -> None:
    """`save_to_disk` plus `extra_files` (name -> text) into a temporary sibling of `out_dir`, renamed into place only
    when complete; `out_dir` must not exist or be empty. Progress bars only if `progress` (the caller's setting is
    restored)."""
    was_disabled = datasets.are_progress_bars_disabled()
    try:
        if not progress:
            datasets.disable_progress_bars()
        with folder_written_atomically(Path(out_dir)) as tmp:
            dataset.save_to_disk(str(tmp))
            for name, text in extra_files.items():
                (tmp / name).write_text(text)
    finally:
        if not progress and not was_disabled:
            datasets.enable_progress_bars()
