"""RichHF-18K, for users who have it: its TFRecord labels joined to their own copy of the Pick-a-Pic v1 images.

google-research-datasets/richhf-18k ships labels only: `train.tfrecord`, `dev.tfrecord` and `test.tfrecord` (15,810 /
995 / 955 `tf.train.Example`s; fetch them with `git lfs pull`, a plain clone holds LFS pointers). Each names a
Pick-a-Pic v1 image by its `filename`; the image and its caption come from the user, as either

- a folder with `{uid}.{jpg,jpeg,png,webp}` files plus a `metadata.jsonl` (or `metadata.csv`) giving `uid` and
  `caption`, or
- a Pick-a-Pic style parquet file, or folder of parquet files, with columns `image_0_uid`, `image_1_uid`, `jpg_0`,
  `jpg_1`, `caption` (RichHF-18K's train and dev images are in Pick-a-Pic v1's train split, its test images in test).

The result has the ShapesWorld dataset's RichHF-18K columns (`shapesworld.dataset.FEATURES`), so the RAHF training code
reads either unchanged:

    richfeedback rahf prepare-richhf18k --tfrecords richhf-18k --images pickapic_v1/data --out data/richhf18k

Everything is read without tensorflow: the TFRecord framing, its masked CRC32C, and the three `tf.train.Example`
messages are small enough to decode here (and to write, which tests and converters use). Differences from
youweiliang/RichHF's `get_dataset.py`: a caption whose word count differs from its label count is kept and counted
(its unlabelled words count as aligned, extra labels are ignored, so `labeled_prompt` always has the words of
`clean_prompt`), where the reference only prints it and truncates `labeled_prompt` to the shorter of the two; missing
images are an error naming them, or are dropped and counted, where the reference raises a KeyError.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence, Union

import datasets
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ...dataset_io import refuse_non_empty, save_dataset_atomically
from ...eval.metrics import labeled_prompt
from ...tfrecord import (  # noqa: F401 - re-exported: the TFRecord API users of this module reach for
    ExampleDecodeError, TFRecordError, crc32c, crc32c_many, encode_example, masked_crc32c, parse_example, read_tfrecord,
    write_tfrecord)
from ...shapesworld.scene import prompt_words

# ============================================================================ RichHF-18K
SPLITS = ("train", "dev", "test")
SCORE_COLUMNS = ("aesthetics_score", "artifact_score", "misalignment_score", "overall_score")
RELEASED_SIZES = {"train": 15810, "dev": 995, "test": 955}  # records per file in the public release
MAP_COLUMNS = ("artifact_map", "misalignment_map")
# The RichHF-18K columns of `shapesworld.dataset.FEATURES`, in its order (a test keeps the two the same).
FEATURES = datasets.Features({
    "image": datasets.Image(),
    "prompt": datasets.Value("string"),
    "filename": datasets.Value("string"),
    **{name: datasets.Value("float32") for name in SCORE_COLUMNS},
    **{name: datasets.Image() for name in MAP_COLUMNS},
    "prompt_misalignment_label": datasets.Value("string"),
    "clean_prompt": datasets.Value("string"),
    "labeled_prompt": datasets.Value("string"),
})
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
PARQUET_COLUMNS = ("image_0_uid", "image_1_uid", "jpg_0", "jpg_1", "caption")
IMAGES_HELP = ("a folder with {uid}.{jpg,jpeg,png,webp} files plus a metadata.jsonl (or metadata.csv) giving uid and "
               "caption, or a Pick-a-Pic style parquet file or folder of parquet files with columns "
               + ", ".join(PARQUET_COLUMNS))
SUMMARY_FILE = "richhf18k_summary.json"
_ROWS_PER_CHUNK = 500


def uid_of(filename: str) -> str:
    """The Pick-a-Pic image uid of a RichHF-18K `filename`: its base name without the extension."""
    return posixpath.splitext(posixpath.basename(filename))[0]


def read_annotations(path, verify_crc: bool = True) -> list[dict]:
    """The records of one RichHF-18K TFRecord file as dicts: `uid`, `filename`, the four scores (float), the two
    maps (encoded image bytes) and `prompt_misalignment_label` (str). A record lacking one raises a ValueError."""
    records = []
    for index, data in enumerate(read_tfrecord(path, verify_crc=verify_crc)):
        try:
            example = parse_example(data)
        except ExampleDecodeError as err:
            raise ValueError(f"{path}: record {index} is not a tf.train.Example: {err}") from err
        wanted = ("filename", *SCORE_COLUMNS, *MAP_COLUMNS, "prompt_misalignment_label")
        lacking = [name for name in wanted if not example.get(name)]
        if lacking:
            raise ValueError(f"{path}: record {index} lacks the RichHF-18K feature(s) {lacking}; is this a "
                             "RichHF-18K file?")
        filename = example["filename"][0].decode("utf-8")
        records.append({
            "uid": uid_of(filename),
            "filename": filename,
            **{name: float(example[name][0]) for name in SCORE_COLUMNS},
            **{name: bytes(example[name][0]) for name in MAP_COLUMNS},
            "prompt_misalignment_label": example["prompt_misalignment_label"][0].decode("utf-8"),
        })
    return records


class _ImageFolder:
    """`{uid}.{ext}` image files with captions from metadata.jsonl or metadata.csv."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = {}
        for entry in os.scandir(folder):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTENSIONS and entry.is_file():
                self.files.setdefault(stem, Path(entry.path))
        self.captions = self._read_metadata()

    def _read_metadata(self) -> dict[str, str]:
        jsonl, csv_path = self.folder / "metadata.jsonl", self.folder / "metadata.csv"
        if jsonl.is_file():
            where, rows = jsonl, []
            for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{jsonl} line {number} is not JSON: {err}") from err
        elif csv_path.is_file():
            with open(csv_path, newline="", encoding="utf-8") as f:
                where, rows = csv_path, list(csv.DictReader(f))
        else:
            raise FileNotFoundError(f"no captions for the images in {self.folder}: images (--images) must be "
                                    f"{IMAGES_HELP}")
        if rows and not {"uid", "caption"} <= set(rows[0]):
            raise ValueError(f"{where} has no uid and caption fields: images (--images) must be {IMAGES_HELP}")
        return {str(row["uid"]): row["caption"] for row in rows if row.get("caption") is not None}

    def index(self, uids: Iterable[str]) -> dict[str, str]:
        return {uid: self.captions[uid] for uid in uids if uid in self.files and uid in self.captions}

    def read_images(self, uids: Iterable[str]) -> "_FileReader":
        return _FileReader({uid: self.files[uid] for uid in uids})


class _FileReader:
    """uid -> the bytes of its image file, read when asked for."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def __getitem__(self, uid: str) -> bytes:
        return self.files[uid].read_bytes()


class _PickapicParquet:
    """Pick-a-Pic rows (image_0_uid, image_1_uid, jpg_0, jpg_1, caption) in parquet files, read column by column."""

    def __init__(self, files: list[Path]):
        import pyarrow.parquet as pq

        self.files = [pq.ParquetFile(path) for path in files]
        self.paths = files
        for path, file in zip(files, self.files):
            lacking = [c for c in PARQUET_COLUMNS if c not in file.schema_arrow.names]
            if lacking:
                raise ValueError(f"{path} lacks the column(s) {lacking}: images (--images) must be {IMAGES_HELP}")
        # the first row of each row group, per file, to find a row's group
        self.group_starts = [np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
                             for f in self.files]
        self.where: dict[str, tuple[int, int, int]] = {}  # uid -> (file, row, side)

    def index(self, uids: Iterable[str]) -> dict[str, str]:
        wanted, captions = set(uids), {}
        for file_index, file in enumerate(self.files):
            table = file.read(columns=["image_0_uid", "image_1_uid", "caption"])
            caption_column = table.column("caption").to_pylist()
            for side in (0, 1):
                for row, uid in enumerate(table.column(f"image_{side}_uid").to_pylist()):
                    uid = str(uid)
                    if uid in wanted and uid not in captions and caption_column[row] is not None:
                        captions[uid] = caption_column[row]
                        self.where[uid] = (file_index, row, side)
        return captions

    def read_images(self, uids: Iterable[str]) -> Mapping[str, bytes]:
        """Reads each row group holding a wanted image once, only its jpg column(s)."""
        by_group: dict[tuple[int, int], list] = {}
        for uid in uids:
            file_index, row, side = self.where[uid]
            starts = self.group_starts[file_index]
            group = int(np.searchsorted(starts, row, side="right")) - 1
            by_group.setdefault((file_index, group), []).append((uid, row - int(starts[group]), side))
        images = {}
        for (file_index, group), wanted in by_group.items():
            columns = sorted({f"jpg_{side}" for _, _, side in wanted})
            table = self.files[file_index].read_row_group(group, columns=columns)
            for uid, row, side in wanted:
                value = table.column(f"jpg_{side}")[row].as_py()
                images[uid] = value["bytes"] if isinstance(value, dict) else value  # a datasets Image struct, or bytes
        return images


def _image_source(images) -> Union[_ImageFolder, _PickapicParquet]:
    path = Path(images)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder; images (--images) must be {IMAGES_HELP}")
    if path.is_file() and path.suffix == ".parquet":
        return _PickapicParquet([path])
    if path.is_dir():
        if (path / "metadata.jsonl").is_file() or (path / "metadata.csv").is_file():
            return _ImageFolder(path)
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            return _PickapicParquet(parquet)
        if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir()):
            return _ImageFolder(path)  # raises: no captions
    raise FileNotFoundError(f"{path} is not {IMAGES_HELP}")


def _reencoded_if_needed(data: bytes, mode: str, what: str) -> bytes:
    """The image bytes as they are if they decode to `mode`, else converted to it and stored as PNG."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.mode == mode:
            return data
        out = io.BytesIO()
        image.convert(mode).save(out, format="PNG")
        return out.getvalue()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{what} is not a readable image: {err}") from err


def _labels_for(words: list[str], label_text: str, where: str) -> tuple[list[int], bool]:
    """Per-word labels, and whether the counts matched; unlabelled words count as aligned, extra labels are dropped."""
    try:
        labels = [int(v) for v in label_text.split()]
    except ValueError as err:
        raise ValueError(f"{where}: prompt_misalignment_label {label_text!r} is not space-separated ints") from err
    return (labels + [1] * len(words))[:len(words)], len(labels) == len(words)


def _row(record: dict, caption: str, image: bytes) -> tuple[dict, bool]:
    uid = record["uid"]
    words = prompt_words(caption)
    labels, matched = _labels_for(words, record["prompt_misalignment_label"], f"uid {uid}")
    row = {
        "image": {"bytes": _reencoded_if_needed(image, "RGB", f"the image of uid {uid}"), "path": None},
        "prompt": caption,
        "filename": record["filename"],
        **{name: record[name] for name in SCORE_COLUMNS},
        **{name: {"bytes": _reencoded_if_needed(record[name], "L", f"{name} of uid {uid}"), "path": None}
           for name in MAP_COLUMNS},
        "prompt_misalignment_label": record["prompt_misalignment_label"],
        "clean_prompt": " ".join(words),
        "labeled_prompt": labeled_prompt(words, labels),
    }
    return row, matched


def _rows(records: list[dict], captions: Mapping[str, str], images: Mapping[str, bytes], mismatched: list,
          tqdm_options: dict) -> Iterator[dict]:
    """The dataset rows of `records`; the uids whose word and label counts differ are appended to `mismatched`."""
    for record in tqdm(records, **tqdm_options):
        row, matched = _row(record, captions[record["uid"]], images[record["uid"]])
        if not matched:
            mismatched.append(record["uid"])
        yield row


def _as_dataset(rows: Iterable[dict]) -> datasets.Dataset:
    # Arrow tables of a few hundred rows at a time, so at most that many rows are held as Python objects.
    chunks, chunk = [], []
    for row in rows:
        chunk.append(row)
        if len(chunk) == _ROWS_PER_CHUNK:
            chunks.append(datasets.Dataset.from_list(chunk, features=FEATURES))
            chunk = []
    if chunk:
        chunks.append(datasets.Dataset.from_list(chunk, features=FEATURES))
    if not chunks:  # every image missing and skipped (from_list cannot make an empty dataset)
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    return datasets.concatenate_datasets(chunks) if len(chunks) > 1 else chunks[0]


def join_richhf18k(tfrecord_dir, images, splits: Sequence[str] = SPLITS, missing: str = "error",
                   progress: bool = False, verify_crc: bool = True) -> tuple[datasets.DatasetDict, dict]:
    """`load_richhf18k`, also returning the summary that `prepare_richhf18k` returns."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    tfrecord_dir = Path(tfrecord_dir)
    annotations = {}
    for split in splits:
        path = tfrecord_dir / f"{split}.tfrecord"
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {tfrecord_dir}: --tfrecords must be the folder of RichHF-18K's "
                                    "train.tfrecord, dev.tfrecord and test.tfrecord (google-research-datasets/"
                                    "richhf-18k, fetched with `git lfs pull`)")
        annotations[split] = read_annotations(path, verify_crc=verify_crc)

    source = _image_source(images)
    captions = source.index({r["uid"] for records in annotations.values() for r in records})
    absent = {split: [r["uid"] for r in records if r["uid"] not in captions] for split, records in annotations.items()}
    n_absent, n_total = sum(map(len, absent.values())), sum(map(len, annotations.values()))
    if n_absent and missing == "error":
        first = [uid for uids in absent.values() for uid in uids][:5]
        per_split = ", ".join(f"{split} {len(uids)}" for split, uids in absent.items() if uids)
        raise FileNotFoundError(
            f"{n_absent} of {n_total} RichHF-18K images ({per_split}) have no image or no caption in {images}; first "
            f"uids: {', '.join(first)}. Pass Pick-a-Pic v1's train images (for train and dev) and test images (for "
            f"test) as {IMAGES_HELP}; or pass missing='skip' (--missing skip) to leave them out."
        )

    splits_out, summary = {}, {"records": {split: len(records) for split, records in annotations.items()},
                              "scores_outside_0_1": {split: sum(not 0.0 <= r[name] <= 1.0 for r in records
                                                                for name in SCORE_COLUMNS)
                                                     for split, records in annotations.items()},
                              "examples": {}, "missing": {}, "length_mismatches": {}, "missing_uids": {},
                              "length_mismatch_uids": {}}
    for split, records in annotations.items():
        kept = [r for r in records if r["uid"] in captions]
        mismatched: list[str] = []
        rows = _rows(kept, captions, source.read_images(r["uid"] for r in kept), mismatched,
                     tqdm_options={"desc": f"richhf-18k {split}", "disable": not progress})
        splits_out[split] = _as_dataset(rows)
        summary["examples"][split] = len(kept)
        summary["missing"][split] = len(absent[split])
        summary["length_mismatches"][split] = len(mismatched)
        summary["missing_uids"][split] = absent[split]
        summary["length_mismatch_uids"][split] = mismatched
    return datasets.DatasetDict(splits_out), summary


def load_richhf18k(tfrecord_dir, images, splits: Sequence[str] = SPLITS, missing: str = "error",
                   progress: bool = False, verify_crc: bool = True) -> datasets.DatasetDict:
    """RichHF-18K's labels in `tfrecord_dir/{split}.tfrecord` joined to `images` (see the module docstring).

    Columns are `FEATURES`, in the TFRecord's order: `image` (RGB), `prompt` (the caption), `clean_prompt` (its words
    joined by single spaces), `labeled_prompt` (misaligned words, label 0, suffixed `_0`), `filename`, the four scores,
    the two heatmaps (grayscale images, 512x512 in the real data) and `prompt_misalignment_label`. With `missing=
    "error"` an image or caption that cannot be found raises a FileNotFoundError naming how many and the first uids;
    with "skip" those examples are left out. Skipped examples and captions whose word count differs from their label
    count are reported with a warning; `join_richhf18k` returns the counts and uids.

    Memory: the encoded images of the requested splits are held in memory (parquet images are read row group by row
    group before the rows are made); `prepare_richhf18k` saves the result to disk.
    """
    dataset, summary = join_richhf18k(tfrecord_dir, images, splits, missing, progress, verify_crc)
    notes = []
    if sum(summary["missing"].values()):
        notes.append(f"left out {summary['missing']} examples whose image or caption was not found")
    if sum(summary["length_mismatches"].values()):
        notes.append(f"{summary['length_mismatches']} captions have a word count that differs from their label count "
                     "(unlabelled words count as aligned)")
    if notes:
        warnings.warn("RichHF-18K: " + "; ".join(notes), stacklevel=2)
    return dataset


def prepare_richhf18k(tfrecord_dir, images, out_dir, missing: str = "error", splits: Sequence[str] = SPLITS,
                      progress: bool = True, verify_crc: bool = True) -> dict:
    """Join RichHF-18K as `load_richhf18k` does and save it with `save_to_disk` into `out_dir`, atomically.

    `out_dir` must not exist or be empty; the dataset is written into a temporary sibling and renamed into place when
    complete. Beside the splits, `out_dir/richhf18k_summary.json` holds the returned summary: per split, the
    TFRecord's `records`, `scores_outside_0_1`, `examples`, `missing` and `length_mismatches` counts, and the
    `missing_uids` and `length_mismatch_uids` (`release_notes` reads what differs from the public release).
    """
    out = Path(out_dir)
    refuse_non_empty(out)
    dataset, summary = join_richhf18k(tfrecord_dir, images, splits, missing, progress, verify_crc)
    empty = [split for split, n in summary["examples"].items() if n == 0]
    if empty:
        raise ValueError(f"no examples left in split(s) {empty} once missing images are skipped; nothing to save")
    save_dataset_atomically(dataset, out, extra_files={SUMMARY_FILE: json.dumps(summary, indent=2) + "\n"},
                            progress=progress)
    return summary


def add_prepare_command(subparsers) -> None:
    """Register `prepare-richhf18k` on an argparse subparsers object; errors are ValueError / FileNotFoundError /
    FileExistsError with a one-line message for the caller to print."""
    p = subparsers.add_parser("prepare-richhf18k", help="join RichHF-18K's TFRecord labels to your Pick-a-Pic images "
                                                        "and save them as a dataset")
    p.add_argument("--tfrecords", required=True, help="folder of train.tfrecord, dev.tfrecord, test.tfrecord")
    p.add_argument("--images", required=True, help=IMAGES_HELP)
    p.add_argument("--out", required=True, help="folder to write (save_to_disk); must not exist or be empty")
    p.add_argument("--missing", choices=("error", "skip"), default="error",
                   help="what to do with examples whose image is not found (default: error)")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args) -> None:
    summary = prepare_richhf18k(args.tfrecords, args.images, args.out, missing=args.missing)
    counts = " / ".join(f"{n} {split}" for split, n in summary["examples"].items())
    print(f"wrote RichHF-18K ({counts}) to {args.out}; {sum(summary['missing'].values())} missing images left out, "
          f"{sum(summary['length_mismatches'].values())} caption/label length mismatches "
          f"(uids in {Path(args.out) / SUMMARY_FILE})")
    for note in release_notes(summary):
        print(f"note: {note}")


def release_notes(summary: dict) -> list[str]:
    """What in a join's summary says the files are not the public release as published: record counts other than
    15,810 / 995 / 955 (an incomplete `git lfs pull`?), scores outside [0, 1] (the range the RAHF heads predict)."""
    notes = [f"{split}.tfrecord has {n} records; the public release has {RELEASED_SIZES[split]} (an incomplete "
             "download? run `git lfs pull` in the richhf-18k clone)"
             for split, n in summary["records"].items() if split in RELEASED_SIZES and n != RELEASED_SIZES[split]]
    outside = {split: n for split, n in summary["scores_outside_0_1"].items() if n}
    if outside:
        notes.append(f"scores outside [0, 1] (the range RAHF's score heads predict) per split: {outside}")
    return notes
