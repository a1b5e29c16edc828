"""RichHF-18K without tensorflow: TFRecord framing and CRCs, tf.train.Example decoding, and the join to images."""

import argparse
import io
import json
import struct

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from richfeedback.reward_models.rahf import richhf18k
from richfeedback.reward_models.rahf.richhf18k import (FEATURES, TFRecordError, add_prepare_command, crc32c,
                                                       crc32c_many, encode_example, join_richhf18k, load_richhf18k,
                                                       masked_crc32c, parse_example, prepare_richhf18k,
                                                       read_annotations, read_tfrecord, write_tfrecord)

# ----------------------------------------------------------------------------- helpers


def _encoded(image: Image.Image, format: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=format)
    return out.getvalue()


def _heatmap(value: int, mode: str = "L", size: int = 512) -> bytes:
    return _encoded(Image.new(mode, (size, size), value if mode == "L" else (value,) * 3))


def _richhf_example(uid: str, labels: str, split: str = "train", heatmap_mode: str = "L") -> dict:
    """One record in RichHF-18K's feature schema (reference notes, section 2)."""
    return {
        "filename": f"pickapic_v1/{split}/{uid}.jpg".encode(),
        "aesthetics_score": [0.25],
        "artifact_score": [0.5],
        "misalignment_score": [0.75],
        "overall_score": [1.0],
        "artifact_map": _heatmap(10, heatmap_mode),
        "misalignment_map": _heatmap(200, heatmap_mode),
        "prompt_misalignment_label": labels.encode(),
    }


# uid -> (caption, labels); "cat" and "dog" in train, "owl" in dev, "fox" in test
CAPTIONS = {"cat": ("A cat, on a mat!", "1 0 1 1 0"), "dog": ("a red dog", "1 1 0"),
            "owl": ("an owl", "0 1"), "fox": ("fox", "1")}
SPLIT_UIDS = {"train": ["cat", "dog"], "dev": ["owl"], "test": ["fox"]}


@pytest.fixture
def tfrecords(tmp_path):
    folder = tmp_path / "richhf-18k"
    for split, uids in SPLIT_UIDS.items():
        write_tfrecord(folder / f"{split}.tfrecord", [_richhf_example(u, CAPTIONS[u][1], split) for u in uids])
    return folder


def _image(uid: str) -> Image.Image:
    return Image.new("RGB", (8, 6), (40 * (1 + sorted(CAPTIONS).index(uid)), 0, 0))


def _image_folder(root, uids, metadata: str = "jsonl"):
    folder = root / "images"
    folder.mkdir()
    for uid in uids:
        _image(uid).save(folder / f"{uid}.jpg")
    rows = [{"uid": uid, "caption": CAPTIONS[uid][0]} for uid in uids]
    if metadata == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif metadata == "csv":
        (folder / "metadata.csv").write_text("uid,caption\n" + "".join(f'{r["uid"]},"{r["caption"]}"\n' for r in rows))
    return folder


def _parquet(path, uids):
    """Pick-a-Pic pairs, one row per row group: the wanted images alternate between side 0 and side 1 of their row,
    the other side being a black image of another uid."""
    rows = []
    for i, uid in enumerate(uids):
        sides = [(uid, _encoded(_image(uid), "JPEG")), (f"other-{uid}", _encoded(Image.new("RGB", (8, 6))))]
        (uid_0, jpg_0), (uid_1, jpg_1) = sides[::-1] if i % 2 else sides
        rows.append({"image_0_uid": uid_0, "image_1_uid": uid_1, "jpg_0": jpg_0, "jpg_1": jpg_1,
                     "caption": CAPTIONS[uid][0], "best_image_uid": uid_0})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1)
    return path


def _images(kind, root, uids):
    if kind == "folder":
        return _image_folder(root, uids)
    if kind == "parquet":
        return _parquet(root / "pickapic.parquet", uids)
    _parquet(root / "pickapic" / "data" / "train-00000-of-00001.parquet", uids)  # a folder of parquet files
    return root / "pickapic"


# ----------------------------------------------------------------------------- CRC32C


def test_crc32c_gives_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_masked_crc32c_rotates_by_15_and_adds_the_tfrecord_delta():
    crc = crc32c(b"123456789")
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_vectorised_crc32c_equals_the_byte_by_byte_one_for_every_length():
    rng = np.random.default_rng(0)
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 3, 4, 5, 255, 256, 257, 1000, 4099)]
    assert crc32c_many(records).tolist() == [crc32c(r) for r in records]


# ----------------------------------------------------------------------------- TFRecord and tf.train.Example


def test_tfrecord_round_trip_keeps_bytes_and_packed_float_and_int64_lists(tmp_path):
    examples = [
        {"name": "α-one", "blob": [b"\x00\xff", b""], "floats": [0.5, -1.25, 3.0],
         "ints": [0, 1, -1, 2**40, -2**63]},
        {"name": b"two", "floats": np.array([], dtype=np.float32), "ints": np.arange(300)},
    ]
    path = tmp_path / "x.tfrecord"
    assert write_tfrecord(path, examples) == 2
    parsed = [parse_example(r) for r in read_tfrecord(path)]
    assert parsed[0] == {"name": ["α-one".encode()], "blob": [b"\x00\xff", b""], "floats": [0.5, -1.25, 3.0],
                         "ints": [0, 1, -1, 2**40, -2**63]}
    assert parsed[1] == {"name": [b"two"], "floats": [], "ints": list(range(300))}
    first = encode_example(examples[0])
    assert path.read_bytes()[:12] == struct.pack("<QI", len(first), masked_crc32c(struct.pack("<Q", len(first))))


def test_unpacked_float_and_int64_lists_parse_like_packed_ones():
    features = {"floats": [0.5, 2.0], "ints": [7, -3]}
    unpacked = encode_example(features, packed=False)
    assert unpacked != encode_example(features)
    assert parse_example(unpacked) == parse_example(encode_example(features)) == features


def test_floats_are_stored_as_float32():
    assert parse_example(encode_example({"x": 0.1}))["x"] == [float(np.float32(0.1))]


def _three_record_file(tmp_path):
    path = tmp_path / "three.tfrecord"
    records = [b"a" * 10, b"b" * 300, b"c" * 20]
    write_tfrecord(path, records)
    return path, records, 16 + 10  # the second record starts after 12 + 10 + 4 bytes


def test_a_corrupt_data_byte_is_reported_with_the_file_and_record_offset(tmp_path):
    path, records, second = _three_record_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[second + 12 + 100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(TFRecordError, match=rf"three\.tfrecord: corrupt record at byte offset {second}: the data's CRC"):
        list(read_tfrecord(path))
    assert len(list(read_tfrecord(path, verify_crc=False))) == 3


def test_a_corrupt_length_is_reported_with_the_file_and_record_offset(tmp_path):
    path, records, second = _three_record_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[second + 1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(TFRecordError, match=rf"three\.tfrecord: corrupt record at byte offset {second}: the length's"):
        list(read_tfrecord(path))


@pytest.mark.parametrize("cut, message", [(5, "ends inside a record header"), (12 + 50, "claims 300 bytes")])
def test_a_truncated_file_is_reported_with_the_offset_of_the_cut_record(tmp_path, cut, message):
    path, records, second = _three_record_file(tmp_path)
    path.write_bytes(path.read_bytes()[:second + cut])
    with pytest.raises(TFRecordError, match=rf"three\.tfrecord: truncated at byte offset {second}: .*{message}"):
        list(read_tfrecord(path))


def test_a_git_lfs_pointer_asks_for_git_lfs_pull(tmp_path):
    path = tmp_path / "train.tfrecord"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:3ab1\nsize 150710286\n")
    with pytest.raises(TFRecordError, match="Git LFS pointer.*git lfs pull"):
        list(read_tfrecord(path))


def test_a_richhf18k_record_parses_into_its_fields(tmp_path):
    path = tmp_path / "dev.tfrecord"
    write_tfrecord(path, [_richhf_example("0a1b-uid", "1 0 1", "dev")])
    (record,) = read_annotations(path)
    assert record["uid"] == "0a1b-uid"
    assert record["filename"] == "pickapic_v1/dev/0a1b-uid.jpg"
    assert [record[k] for k in richhf18k.SCORE_COLUMNS] == [0.25, 0.5, 0.75, 1.0]
    assert record["artifact_map"] == _heatmap(10)
    assert record["prompt_misalignment_label"] == "1 0 1"


def test_a_record_lacking_a_richhf18k_feature_names_it(tmp_path):
    example = _richhf_example("u", "1")
    del example["overall_score"]
    write_tfrecord(tmp_path / "train.tfrecord", [example])
    with pytest.raises(ValueError, match=r"record 0 lacks the RichHF-18K feature\(s\) \['overall_score'\]"):
        read_annotations(tmp_path / "train.tfrecord")


# ----------------------------------------------------------------------------- the join


def test_columns_are_the_richhf18k_columns_of_the_shapesworld_dataset():
    from richfeedback.shapesworld.dataset import FEATURES as SHAPESWORLD

    assert list(FEATURES.items()) == [(k, v) for k, v in SHAPESWORLD.items() if k in FEATURES]


@pytest.mark.parametrize("kind", ["folder", "parquet", "parquet-folder"])
def test_join_gives_prompts_labels_image_and_heatmaps(tfrecords, tmp_path, kind):
    dataset = load_richhf18k(tfrecords, _images(kind, tmp_path, CAPTIONS))
    assert {split: len(ds) for split, ds in dataset.items()} == {"train": 2, "dev": 1, "test": 1}
    cat = dataset["train"][0]
    assert cat["prompt"] == "A cat, on a mat!"
    assert cat["clean_prompt"] == "A cat on a mat"
    assert cat["labeled_prompt"] == "A cat_0 on a mat_0"
    assert cat["prompt_misalignment_label"] == "1 0 1 1 0"
    assert cat["filename"] == "pickapic_v1/train/cat.jpg"
    assert [cat[k] for k in richhf18k.SCORE_COLUMNS] == [0.25, 0.5, 0.75, 1.0]
    assert (cat["image"].mode, cat["image"].size) == ("RGB", (8, 6))
    red = [row["image"].getpixel((4, 3))[0] for split in ("train", "dev", "test") for row in dataset[split]]
    assert red == pytest.approx([40, 80, 160, 120], abs=6)  # cat, dog, owl, fox: each its own picture
    for name, value in (("artifact_map", 10), ("misalignment_map", 200)):
        assert (cat[name].mode, cat[name].size) == ("L", (512, 512))
        assert cat[name].getpixel((0, 0)) == value
    assert dataset["dev"][0]["labeled_prompt"] == "an_0 owl"


def test_captions_may_come_from_metadata_csv(tfrecords, tmp_path):
    dataset = load_richhf18k(tfrecords, _image_folder(tmp_path, CAPTIONS, metadata="csv"), splits=["train"])
    assert dataset["train"]["prompt"] == ["A cat, on a mat!", "a red dog"]


def test_non_rgb_images_and_rgb_heatmaps_are_converted(tmp_path):
    write_tfrecord(tmp_path / "train.tfrecord", [_richhf_example("fox", "1", heatmap_mode="RGB")])
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGBA", (4, 4), (9, 8, 7, 6)).save(folder / "fox.png")
    (folder / "metadata.jsonl").write_text('{"uid": "fox", "caption": "fox"}\n')
    row = load_richhf18k(tmp_path, folder, splits=["train"])["train"][0]
    assert row["image"].mode == "RGB" and row["image"].getpixel((0, 0)) == (9, 8, 7)
    assert row["misalignment_map"].mode == "L" and row["misalignment_map"].getpixel((0, 0)) == 200


@pytest.mark.parametrize("kind", ["folder", "parquet"])
def test_missing_images_are_an_error_naming_count_uids_and_the_skip_option(tfrecords, tmp_path, kind):
    images = _images(kind, tmp_path, ["cat", "owl", "fox"])
    with pytest.raises(FileNotFoundError, match=r"1 of 4 RichHF-18K images \(train 1\) .*first uids: dog\. .*"
                                                r"missing='skip' \(--missing skip\)"):
        load_richhf18k(tfrecords, images)


@pytest.mark.parametrize("kind", ["folder", "parquet"])
def test_skipping_missing_images_drops_and_counts_them(tfrecords, tmp_path, kind):
    dataset, summary = join_richhf18k(tfrecords, _images(kind, tmp_path, ["cat", "owl", "fox"]), missing="skip")
    assert dataset["train"]["filename"] == ["pickapic_v1/train/cat.jpg"]
    assert summary["examples"] == {"train": 1, "dev": 1, "test": 1}
    assert summary["missing"] == {"train": 1, "dev": 0, "test": 0}
    assert summary["missing_uids"]["train"] == ["dog"]
    again = tmp_path / "again"
    again.mkdir()
    with pytest.warns(UserWarning, match=r"left out \{'train': 1, 'dev': 0, 'test': 0\}"):
        load_richhf18k(tfrecords, _images(kind, again, ["cat", "owl", "fox"]), missing="skip")


def test_a_caption_whose_word_count_differs_from_its_labels_is_counted_and_kept_whole(tmp_path):
    write_tfrecord(tmp_path / "train.tfrecord", [_richhf_example("dog", "0 1"), _richhf_example("cat", "1 0 1 1 0 0")])
    dataset, summary = join_richhf18k(tmp_path, _image_folder(tmp_path, ["dog", "cat"]), splits=["train"])
    assert summary["length_mismatches"] == {"train": 2}
    assert summary["length_mismatch_uids"] == {"train": ["dog", "cat"]}
    assert dataset["train"]["labeled_prompt"] == ["a_0 red dog", "A cat_0 on a mat_0"]


def test_an_image_folder_without_captions_says_what_images_must_be(tfrecords, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _image("cat").save(folder / "cat.jpg")
    with pytest.raises(FileNotFoundError, match=r"no captions .*metadata\.jsonl \(or metadata\.csv\) giving uid and "
                                                r"caption, or a Pick-a-Pic style parquet"):
        load_richhf18k(tfrecords, folder)


def test_a_parquet_file_lacking_pickapic_columns_names_them(tfrecords, tmp_path):
    pq.write_table(pa.table({"image_0_uid": ["cat"], "caption": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image_1_uid', 'jpg_0', 'jpg_1'\]"):
        load_richhf18k(tfrecords, tmp_path / "bad.parquet")


def test_a_missing_split_file_names_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.tfrecord in .*git lfs pull"):
        load_richhf18k(tmp_path, tmp_path)


# ----------------------------------------------------------------------------- saving and the command


def test_prepare_refuses_a_split_left_empty(tfrecords, tmp_path):
    with pytest.raises(ValueError, match=r"no examples left in split\(s\) \['test'\]"):
        prepare_richhf18k(tfrecords, _image_folder(tmp_path, ["cat", "dog", "owl"]), tmp_path / "out",
                          missing="skip", progress=False)
    assert not (tmp_path / "out").exists()


def test_prepare_command_writes_a_dataset_loadable_from_disk(tfrecords, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="richfeedback rahf")
    add_prepare_command(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "richhf"
    args = parser.parse_args(["prepare-richhf18k", "--tfrecords", str(tfrecords), "--images",
                              str(_images("parquet", tmp_path, ["cat", "owl", "fox"])), "--out", str(out), "--missing", "skip"])
    args.func(args)
    printed = capsys.readouterr().out
    assert "(1 train / 1 dev / 1 test)" in printed
    assert "train.tfrecord has 2 records; the public release has 15810" in printed  # a small synthetic release
    loaded = datasets.load_from_disk(str(out))
    assert loaded["train"][0]["labeled_prompt"] == "A cat_0 on a mat_0"
    assert json.loads((out / "richhf18k_summary.json").read_text())["missing_uids"]["train"] == ["dog"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        args.func(args)


def test_release_notes_flag_record_counts_and_score_ranges_other_than_the_release():
    from richfeedback.reward_models.rahf.richhf18k import release_notes

    released = {"records": {"train": 15810, "dev": 995, "test": 955}, "scores_outside_0_1": {"train": 0, "dev": 0,
                                                                                            "test": 0}}
    assert release_notes(released) == []
    partial = {"records": {"train": 15000, "dev": 995}, "scores_outside_0_1": {"train": 3, "dev": 0}}
    notes = release_notes(partial)
    assert len(notes) == 2 and "15000 records" in notes[0] and "git lfs pull" in notes[0]
    assert "{'train': 3}" in notes[1]
