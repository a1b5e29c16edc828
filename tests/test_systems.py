"""System specs: parsing, pre-generated folders, and pipelines with a LoRA (or guidance) standing for a system."""

import json

import numpy as np
import pytest
import torch

from richfeedback.errors import UsageError
from richfeedback.eval.systems import SystemSpec, parse_system, render_system
from richfeedback.generation import GenerationJob, load_pipeline
from richfeedback.imaging import load_rgb

FAST = {"num_inference_steps": 3}
JOBS = [GenerationJob("a red circle on the left", 0), GenerationJob("two blue squares", 1)]


def test_spec_strings_round_trip(tmp_path):
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"")
    text = f"embedded,lora={lora},lora_scale=0.5,guidance=rahf:aesthetics,guidance_scale=2"
    assert parse_system(text) == SystemSpec("embedded", str(lora), 0.5, "rahf:aesthetics", 2.0)
    assert str(parse_system(text)) == text
    assert parse_system("embedded") == SystemSpec("embedded")
    assert str(parse_system("org/model,guidance=0.7*rahf:aesthetics+0.3*rahf:plausibility")) == \
        "org/model,guidance=0.7*rahf:aesthetics+0.3*rahf:plausibility"


@pytest.mark.parametrize("spec, message", [
    ("embedded,lora_scale=0.5", "lora_scale needs lora=DIR"),
    ("embedded,guidance_scale=2", "guidance_scale needs guidance=NAME"),
    ("embedded,strength=3", "cannot read option 'strength=3'"),
    ("embedded,lora=nowhere", "no pytorch_lora_weights.safetensors in nowhere"),
    (",lora=x", "has no model"),
])
def test_bad_specs_say_what_to_write(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_system(spec)


def test_image_folder_takes_no_lora(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(UsageError, match="folder of generated images"):
        parse_system(f"{tmp_path},guidance=aesthetic")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    """A LoRA in diffusers format on the embedded UNet, with perturbed lora_B so that it changes the images."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = tmp_path_factory.mktemp("lora")
    unet = load_pipeline(None).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        safe_serialization=True)
    return folder


def test_lora_system_shares_the_noise_and_changes_the_images(tmp_path, lora_dir):
    base = render_system("embedded", JOBS, tmp_path / "base", progress=False, sampling=FAST)
    tuned = render_system(f"embedded,lora={lora_dir}", JOBS, tmp_path / "lora", progress=False, sampling=FAST)
    off = render_system(f"embedded,lora={lora_dir},lora_scale=0", JOBS, tmp_path / "off", progress=False,
                        sampling=FAST)
    for job in JOBS:
        key = (job.prompt, job.seed)
        assert np.abs(load_rgb(base[key]).astype(int) - load_rgb(tuned[key]).astype(int)).mean() > 2
        # At scale 0 the LoRA is off: the same prompt and seed give the base image, so A and B share their noise.
        assert np.abs(load_rgb(base[key]).astype(int) - load_rgb(off[key]).astype(int)).max() <= 1
    rows = [json.loads(line) for line in (tmp_path / "lora" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"], r["num_inference_steps"]) for r in rows] == [(j.prompt, j.seed, 3) for j in JOBS]


def test_image_folder_system_copies_by_prompt_and_seed_and_resumes(tmp_path):
    source = render_system("embedded", JOBS, tmp_path / "gen", progress=False, sampling=FAST)
    copied = render_system(str(tmp_path / "gen"), JOBS[::-1], tmp_path / "copy", progress=False)
    for key, path in copied.items():
        assert path.read_bytes() == source[key].read_bytes()
    before = (tmp_path / "copy" / "manifest.jsonl").read_text()
    render_system(str(tmp_path / "gen"), JOBS, tmp_path / "copy", progress=False)
    assert (tmp_path / "copy" / "manifest.jsonl").read_text() == before


def test_guidance_at_scale_zero_reproduces_the_unguided_images(tmp_path):
    pytest.importorskip("richfeedback.guidance.reward_guidance")
    base = render_system("embedded", JOBS[:1], tmp_path / "base", progress=False, sampling=FAST)
    guided = render_system("embedded,guidance=rahf:aesthetics,guidance_scale=0", JOBS[:1], tmp_path / "g",
                           progress=False, sampling=FAST)
    key = (JOBS[0].prompt, JOBS[0].seed)
    assert np.array_equal(load_rgb(base[key]), load_rgb(guided[key]))


def test_a_lora_trained_with_negatives_is_sampled_with_its_negative_prompt(tmp_path, lora_dir):
    import shutil

    from richfeedback.eval.systems import lora_sampling, parse_system

    folder = tmp_path / "with-negatives"
    shutil.copytree(lora_dir, folder)
    assert lora_sampling(parse_system(f"embedded,lora={folder}")) == {}
    (folder / "richfeedback_lora.json").write_text(json.dumps({"negative_prompt": "Weird image."}))
    assert lora_sampling(parse_system(f"embedded,lora={folder}")) == {"negative_prompt": "Weird image."}
    plain = render_system(f"embedded,lora={lora_dir}", JOBS[:1], tmp_path / "a", progress=False, sampling=FAST)
    negative = render_system(f"embedded,lora={folder}", JOBS[:1], tmp_path / "b", progress=False, sampling=FAST)
    key = (JOBS[0].prompt, JOBS[0].seed)
    assert np.abs(load_rgb(plain[key]).astype(int) - load_rgb(negative[key]).astype(int)).max() > 0
    row = json.loads((tmp_path / "b" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["negative_prompt"] == "Weird image."
