"""The embedded generator loads offline as a plain diffusers pipeline; generation folders are seeded and resumable."""

import json
import os

import numpy as np
import pytest

from richfeedback.errors import UsageError
from richfeedback.generation import (EMBEDDED_DEFAULTS, embedded_generator_path, embedded_inpainter_path,
                                     generate_images, generate_to_folder, load_pipeline, pipeline_defaults, plan_jobs,
                                     read_manifest, save_sampling_defaults)

FAST = {**EMBEDDED_DEFAULTS, "num_inference_steps": 4}


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("embedded")


def test_embedded_pipeline_loads_offline_with_plain_diffusers():
    import torch
    from diffusers import StableDiffusionPipeline

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    pipe = StableDiffusionPipeline.from_pretrained(embedded_generator_path())
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.float32
    assert pipe.tokenizer.model_max_length == pipe.text_encoder.config.max_position_embeddings
    image = pipe("a red circle on the left", height=64, width=64, num_inference_steps=4, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_embedded_model_card_and_baseline_ship_beside_the_weights():
    folder = embedded_generator_path()
    card = (folder / "MODEL_CARD.md").read_text()
    assert "## Oracle numbers" in card and "## Training" in card
    baseline = json.loads((folder / "baseline_oracle.json").read_text())
    assert set(baseline["results"]) == {"train", "heldout"}


def test_sampling_defaults_travel_with_the_pipeline_folder(tmp_path):
    import shutil

    assert pipeline_defaults(None) == pipeline_defaults("embedded", task="inpaint") == EMBEDDED_DEFAULTS
    # A copy of the embedded generator (or a pipeline trained from it that saved its base's defaults) samples as the
    # embedded one does, not with diffusers' 50 steps and CFG 7.5.
    copy = tmp_path / "copy"
    shutil.copytree(embedded_generator_path(), copy)
    assert pipeline_defaults(str(copy)) == EMBEDDED_DEFAULTS
    derived = tmp_path / "derived"
    derived.mkdir()
    assert pipeline_defaults(str(derived)) == {}  # a folder without the file: diffusers' own defaults
    assert save_sampling_defaults(derived, {}) is None and pipeline_defaults(str(derived)) == {}
    save_sampling_defaults(derived, pipeline_defaults(str(embedded_inpainter_path())))
    assert pipeline_defaults(str(derived)) == EMBEDDED_DEFAULTS
    assert pipeline_defaults("stable-diffusion-v1-5/stable-diffusion-v1-5") == {}  # a hub id: nothing read
    with pytest.raises(ValueError, match="steps"):
        save_sampling_defaults(derived, {"steps": 25})


@pytest.mark.parametrize("text, says", [("{not json", "not valid JSON"), ('{"steps": 25}', "it has steps"),
                                        ("[25]", "JSON object")])
def test_a_bad_sampling_defaults_file_is_named_with_the_fix(tmp_path, text, says):
    (tmp_path / "sampling_defaults.json").write_text(text)
    with pytest.raises(UsageError, match=says) as error:
        pipeline_defaults(str(tmp_path))
    assert "sampling_defaults.json" in str(error.value) and "delete it" in str(error.value)


def test_same_prompt_and_seed_give_the_same_image(pipe):
    a = generate_images(pipe, ["a blue square on the right"], [3], **FAST)[0]
    b = generate_images(pipe, ["a blue square on the right"], [3], **FAST)[0]
    c = generate_images(pipe, ["a blue square on the right"], [4], **FAST)[0]
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_an_image_does_not_depend_on_its_batch(pipe):
    alone = generate_images(pipe, ["two green circles"], [5], **FAST)[0]
    batched = generate_images(pipe, ["a red square on the top", "two green circles"], [9, 5], **FAST)[1]
    assert np.abs(alone.astype(int) - batched.astype(int)).max() <= 2


def test_interrupted_folder_resumes_without_redoing_images(tmp_path):
    jobs = plan_jobs(["a red circle on the left", "a yellow triangle"], n_per_prompt=2, seed=10)
    generate_to_folder("embedded", jobs[:3], tmp_path, batch_size=2, progress=False, num_inference_steps=4)
    first = {r["file_name"]: (tmp_path / r["file_name"]).stat().st_mtime_ns for r in read_manifest(tmp_path)}
    with open(tmp_path / "manifest.jsonl", "a") as f:
        f.write('{"file_name": "cut sh')  # a crash mid-line
    generate_to_folder("embedded", jobs, tmp_path, batch_size=2, progress=False, num_inference_steps=4)
    rows = read_manifest(tmp_path)
    assert sorted((r["prompt"], r["seed"]) for r in rows) == sorted((j.prompt, j.seed) for j in jobs)
    assert all((tmp_path / name).stat().st_mtime_ns == t for name, t in first.items())
    assert [r["seed"] for r in rows] == [10, 11, 12, 13]


def test_resuming_a_folder_with_other_sampling_settings_is_refused(tmp_path):
    jobs = plan_jobs(["a red circle on the left"], n_per_prompt=2, seed=0)
    generate_to_folder("embedded", jobs[:1], tmp_path, progress=False, num_inference_steps=3)
    with pytest.raises(ValueError, match="num_inference_steps: 3 there, 4 now.*new --out"):
        generate_to_folder("embedded", jobs, tmp_path, progress=False, num_inference_steps=4)
    with pytest.raises(ValueError, match="guidance_scale: 4.0 there, 7.0 now"):
        generate_to_folder("embedded", jobs, tmp_path, progress=False, num_inference_steps=3, guidance_scale=7.0)
    generate_to_folder("embedded", jobs, tmp_path, progress=False, num_inference_steps=3)  # same settings resume
    assert len(read_manifest(tmp_path)) == 2


def test_missing_model_folder_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no pipeline folder at .*hub id"):
        load_pipeline(str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_pipeline(str(tmp_path))
