"""Saving `datasets` folders the way long jobs must: never over another dataset, never half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import datasets


def refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; pick another --out or delete it first "
            "(a dataset is never written over another one)."
        )


def save_dataset_atomically(dataset: datasets.DatasetDict, out_dir: Path, extra_files: Mapping[str, str] = {},
                            progress: bool = True) -> None:
    """`save_to_disk` plus `extra_files` (name -> text) into a temporary sibling of `out_dir`, renamed into place only
    when complete; `out_dir` must not exist or be empty. Progress bars only if `progress` (the caller's setting is
    restored)."""
    out_dir = Path(out_dir)
    refuse_non_empty(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    was_disabled = datasets.are_progress_bars_disabled()
    try:
        if not progress:
            datasets.disable_progress_bars()
        dataset.save_to_disk(str(tmp))
        for name, text in extra_files.items():
            (tmp / name).write_text(text)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is not
        refuse_non_empty(out_dir)  # in case another run finished first
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if not progress and not was_disabled:
            datasets.enable_progress_bars()
