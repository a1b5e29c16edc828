"""scripts/relabel_diagnostic.py (README, Fine-tuning): captions from the oracle's detected objects or from the
embedded RAHF's misaligned keywords, written as an imagefolder dataset the LoRA training reads."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from richfeedback.finetune.examples import read_imagefolder
from richfeedback.shapesworld import oracle
from richfeedback.shapesworld.render import render_objects
from richfeedback.shapesworld.scene import SceneObject, is_heldout_prompt, parse_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def relabel():
    spec = importlib.util.spec_from_file_location("relabel_diagnostic", ROOT / "scripts/relabel_diagnostic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RED_CIRCLE_LEFT = SceneObject("red", "circle", 0.25, 0.5, 0.12)
BLUE_SQUARE_RIGHT = SceneObject("blue", "square", 0.75, 0.5, 0.12)


def detected(*objects):
    return oracle.detect_objects(render_objects(objects, 64))


def test_oracle_captions_say_what_the_image_shows_in_the_prompts_order(relabel):
    objects = detected(BLUE_SQUARE_RIGHT, RED_CIRCLE_LEFT)
    # right colours, wrong position: the one position word that holds replaces the prompt's
    red = [o for o in objects if o.colour == "red"]
    assert relabel.oracle_caption(parse_prompt("a red circle on the right"), red) == "a red circle on the left"
    # a wrong colour: the caption names the colour drawn; no position word where the prompt asked for none
    caption = relabel.oracle_caption(parse_prompt("a red circle and a green square"), objects)
    assert caption == "a red circle and a blue square"
    assert oracle.evaluate(caption, render_objects((BLUE_SQUARE_RIGHT, RED_CIRCLE_LEFT), 64)).prompt_correct


def test_oracle_captions_leave_out_what_the_grammar_cannot_say(relabel):
    small = SceneObject("red", "circle", 0.75, 0.5, 0.085)
    assert relabel.oracle_caption(parse_prompt("two red circles"), detected(RED_CIRCLE_LEFT, small)) is None
    assert relabel.oracle_caption(parse_prompt("a red circle"), []) is None


def test_rahf_captions_drop_marked_size_and_position_words_and_refuse_other_marks(relabel):
    spec = parse_prompt("a small red circle on the left and a blue square")
    words = [w for w, _, _ in spec.word_roles()]
    mark = lambda *marked: [int(w in marked) for w in words]  # noqa: E731
    assert relabel.rahf_caption(spec, mark()) == spec.text
    assert relabel.rahf_caption(spec, mark("left")) == "a small red circle and a blue square"
    assert relabel.rahf_caption(spec, mark("small")) == "a red circle on the left and a blue square"
    assert relabel.rahf_caption(spec, mark("blue")) is None
    assert relabel.rahf_caption(spec, mark("square")) is None
    with pytest.raises(ValueError, match="word marks"):
        relabel.rahf_caption(spec, [0, 1])


def write_pool(root: Path, images: dict[str, list]) -> Path:
    """A pool as `richfeedback pool generate` lays it out, of rendered images: prompt -> objects of each image."""
    pool = root / "pool"
    shard = pool / "shard-00000"
    shard.mkdir(parents=True)
    n = len(next(iter(images.values())))
    (pool / "pool.json").write_text(json.dumps({"model": "renders", "n": n, "seed": 0, "shard_size": len(images),
                                                "num_prompts": len(images), "sampling": {}}))
    (pool / "prompts.txt").write_text("\n".join(images) + "\n")
    lines = []
    for i, (prompt, scenes) in enumerate(images.items()):
        for k, objects in enumerate(scenes):
            name = f"{i * n + k:08d}.png"
            Image.fromarray(render_objects(objects, 64)).save(shard / name)
            lines.append(json.dumps({"file_name": name, "prompt": prompt, "seed": i * n + k}) + "\n")
    (shard / "manifest.jsonl").write_text("".join(lines))
    return pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    prompts = ["a red circle on the top and a blue square", "a green triangle and a blue square",
               "a red circle and a blue triangle"]
    assert not any(map(is_heldout_prompt, prompts))  # nor are the captions asserted below
    return write_pool(tmp_path_factory.mktemp("relabel"), {
        p: [(RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT), (BLUE_SQUARE_RIGHT,)] for p in prompts})


def test_the_oracle_relabelled_dataset_is_right_everywhere_and_the_training_reads_it(relabel, pool, tmp_path):
    out = tmp_path / "data"
    assert relabel.main(["--pool", str(pool), "--captions", "oracle", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    report = json.loads((out / "relabel_report.json").read_text())
    assert rows and report["kept"] == len(rows) and report["kept_right_fraction"] == 1.0
    for row in rows:
        assert not is_heldout_prompt(row["text"])
        assert oracle.evaluate(row["text"], Image.open(out / row["file_name"])).prompt_correct
    assert {"a red circle on the left and a blue square", "a blue square and a red circle",
            "a red circle and a blue square", "a blue square"} == {r["text"] for r in rows}
    assert len(read_imagefolder(out, "image", "text")["text"]) == len(rows)
    # a second run into the same folder is refused, not mixed in
    assert relabel.main(["--pool", str(pool), "--captions", "oracle", "--out", str(out)]) == 2


def test_rahf_relabelling_only_drops_words_and_the_quantile_keeps_fewer(relabel, pool, tmp_path):
    counts = {}
    for q in ("0", "0.5"):
        out = tmp_path / f"q{q}"
        assert relabel.main(["--pool", str(pool), "--captions", "rahf", "--min-quantile", q, "--out", str(out)]) == 0
        rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
        for row in rows:
            asked, given = parse_prompt(row["prompt"]).groups, parse_prompt(row["text"]).groups
            assert [(g.colour, g.shape, g.count) for g in asked] == [(g.colour, g.shape, g.count) for g in given]
        report = json.loads((out / "relabel_report.json").read_text())
        assert sum(c["kept"] for c in report["by_objects"].values()) == report["kept"] == len(rows)
        counts[q] = len(rows)
    assert counts["0.5"] <= counts["0"]


def test_a_folder_that_is_not_a_pool_is_a_one_line_error(relabel, tmp_path, capsys):
    assert relabel.main(["--pool", str(tmp_path), "--captions", "oracle", "--out", str(tmp_path / "d")]) == 2
    assert "not a pool" in capsys.readouterr().err
    assert relabel.main(["--pool", str(tmp_path), "--captions", "oracle", "--min-quantile", "0.5",
                         "--out", str(tmp_path / "d")]) == 2
    assert "--min-quantile does not apply to --captions oracle" in capsys.readouterr().err
