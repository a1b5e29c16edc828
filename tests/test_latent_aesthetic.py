"""The noise-aware latent aesthetic model and classifier guidance with it: a diffusers model that saves and loads,
a reward whose image scores are its latent scores at t = 0, guidance that takes the gradient at x_t (DDIM and Euler),
and pipelines it was not trained for refused by name."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, load_pipeline
from richfeedback.guidance import RewardGuidance, WeightedReward, load_guidance
from richfeedback.guidance.schedulers import variance_preserving
from richfeedback.reward_models import list_reward_models, load_reward_model
from richfeedback.reward_models.latent_aesthetic import LatentAestheticModel, add_noise, schedule_of

ROOT = Path(__file__).resolve().parents[1]
FAST = {**EMBEDDED_DEFAULTS, "num_inference_steps": 6}
PROMPTS = ["a red circle on the left", "two blue squares"]
TINY = dict(block_out_channels=(8, 16), norm_num_groups=4, time_embedding_dim=16)


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("embedded")


@pytest.fixture(scope="module")
def tiny_folder(pipe, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("latent-aesthetic") / "model"
    LatentAestheticModel(**TINY, schedule=schedule_of(pipe.scheduler.config)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_reward(tiny_folder, pipe):
    return load_reward_model("latent-aesthetic", weights=str(tiny_folder))


def test_the_model_saves_and_loads_as_a_diffusers_model(tiny_folder):
    assert (tiny_folder / "diffusion_pytorch_model.safetensors").exists()
    model = LatentAestheticModel.from_pretrained(str(tiny_folder)).eval()
    again = LatentAestheticModel.from_pretrained(str(tiny_folder)).eval()
    latents = torch.randn(3, 4, 16, 16)
    with torch.no_grad():
        scores = model(latents, torch.tensor([0, 400, 999]))
        assert scores.shape == (3,) and scores.dtype == torch.float32
        assert torch.equal(scores, again(latents, torch.tensor([0, 400, 999])))
        # one timestep for the batch broadcasts; each example's score depends only on its own latents and timestep
        assert torch.allclose(model(latents, 400)[1], scores[1], atol=1e-6)
        assert torch.allclose(model(latents[1:2], torch.tensor([400]))[0], scores[1], atol=1e-6)


def test_image_scores_are_the_latent_scores_at_t0_and_differentiable(tiny_reward, pipe):
    images = generate_images(pipe, PROMPTS, [0, 1], **FAST)
    scores = tiny_reward.score(None, images)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        latents = pipe.vae.encode(pixels * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
        expected = tiny_reward.model(latents, torch.zeros(2))
    assert torch.allclose(scores, expected, atol=1e-5)
    pixels.requires_grad_(True)
    (grad,) = torch.autograd.grad(tiny_reward.differentiable(None, pixels).sum(), pixels)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert "latent-aesthetic" in list_reward_models() and not tiny_reward.needs_prompt


def test_noise_aware_guidance_takes_the_gradient_at_x_t_without_decoding(tiny_reward, pipe):
    g = RewardGuidance(tiny_reward, scale=0.2, every=1, window=(0.0, 1.0))
    guided = generate_images(pipe, PROMPTS, [0, 1], guidance=g, **FAST)
    assert [h["step"] for h in g.history] == list(range(6))
    assert all(np.isfinite(h["grad_rms"]) and h["grad_rms"] > 0 for h in g.history)
    assert g.settings()["path"] == "noise-aware" and "decoder" not in g.settings()
    assert not g._loaded_decoders  # nothing decodes x0
    unguided = generate_images(pipe, PROMPTS, [0, 1], **FAST)
    assert any(not np.array_equal(a, b) for a, b in zip(guided, unguided))
    off = RewardGuidance(tiny_reward, scale=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(generate_images(pipe, PROMPTS, [0, 1], guidance=off, **FAST),
                                                    unguided))


def test_euler_latents_are_brought_to_the_variance_preserving_scale(tiny_reward):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    pipe = load_pipeline("embedded")
    ddim = pipe.scheduler
    ddim.set_timesteps(10)
    x = torch.randn(1, 4, 16, 16)
    assert torch.equal(variance_preserving(ddim, ddim.timesteps[3], x), x)
    euler = EulerDiscreteScheduler.from_config(ddim.config)
    euler.set_timesteps(10)
    euler.scale_model_input(x, euler.timesteps[3])  # sets step_index, as the pipelines do
    sigma = float(euler.sigmas[euler.step_index])
    assert torch.allclose(variance_preserving(euler, euler.timesteps[3], x), x / (1 + sigma**2) ** 0.5)
    # and a whole guided Euler run works (its timesteps are floats)
    pipe.scheduler = euler
    g = RewardGuidance(tiny_reward, scale=0.2, every=2)
    generate_images(pipe, PROMPTS[:1], [0], guidance=g, **FAST)
    assert g.history and all(np.isfinite(h["grad_rms"]) for h in g.history)
    assert isinstance(DDIMScheduler.from_config(euler.config), DDIMScheduler)


def test_pipelines_and_options_it_was_not_trained_for_are_refused(tiny_folder, tiny_reward, pipe, tmp_path):
    config = json.loads((tiny_folder / "config.json").read_text())
    config["schedule"] = {**config["schedule"], "beta_schedule": "scaled_linear"}
    other = tmp_path / "other-schedule"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    (other / "diffusion_pytorch_model.safetensors").write_bytes(
        (tiny_folder / "diffusion_pytorch_model.safetensors").read_bytes())
    wrong = load_reward_model("latent-aesthetic", weights=str(other))
    with pytest.raises(ValueError, match="beta_schedule: 'scaled_linear', 'squaredcos_cap_v2'"):
        generate_images(pipe, PROMPTS[:1], [0], guidance=RewardGuidance(wrong, scale=0.1), **FAST)
    with pytest.raises(ValueError, match="noise-aware reward scores the noisy latents"):
        RewardGuidance(tiny_reward, path="accurate")
    with pytest.raises(ValueError, match="guide with one kind"):
        WeightedReward([(1.0, tiny_reward), (1.0, load_reward_model("rahf:aesthetics"))])
    with pytest.raises(FileNotFoundError, match="scripts/train_latent_aesthetic.py"):
        load_reward_model("latent-aesthetic", weights=str(tmp_path / "nowhere"))


def test_add_noise_matches_the_scheduler(pipe):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    z, eps, t = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16), torch.tensor([0, 10, 500, 999])
    assert torch.allclose(add_noise(z, eps, t, scheduler.alphas_cumprod), scheduler.add_noise(z, eps, t), atol=1e-5)


def test_the_embedded_model_guides_the_embedded_generator_up_its_score(pipe):
    g = load_guidance("latent-aesthetic")
    assert g.noise_aware
    prompts, seeds = PROMPTS * 2, [0, 1, 2, 3]
    guided = generate_images(pipe, prompts, seeds, guidance=g, **EMBEDDED_DEFAULTS)
    unguided = generate_images(pipe, prompts, seeds, **EMBEDDED_DEFAULTS)
    assert float(g.reward.score(None, guided).mean()) > float(g.reward.score(None, unguided).mean())


def test_the_training_script_writes_a_model_that_loads(tmp_path):
    out, work = tmp_path / "model", tmp_path / "work"
    subprocess.run([sys.executable, str(ROOT / "scripts/train_latent_aesthetic.py"), "--out", str(out), "--work-dir",
                    str(work), "--rich-feedback-images", "64", "--dev-images", "16", "--generated-prompts", "2",
                    "--generated-dev-prompts", "2", "--per-prompt", "2", "--epochs", "1", "--batch-size", "16",
                    "--threads", "1"], check=True, capture_output=True)
    record = json.loads((out / "training.json").read_text())
    assert record["data"] == {"rich_feedback_train": 64, "rich_feedback_dev": 16, "generated_train": 4,
                              "generated_dev": 4}
    reward = load_reward_model("latent-aesthetic", weights=str(out))
    assert reward.model.config.schedule["beta_schedule"] == "squaredcos_cap_v2"
    assert (work / "data.pt").exists() and list((work / "logs").rglob("events.out.tfevents.*"))


def test_schedule_defaults_follow_the_kind_of_reward(tiny_reward):
    from richfeedback.guidance import SCHEDULE_DEFAULTS

    noise_aware = RewardGuidance(tiny_reward)
    assert (noise_aware.scale, noise_aware.every, noise_aware.window) == (0.2, 2, (0.2, 0.8))
    image = RewardGuidance(load_reward_model("rahf:aesthetics"))
    assert (image.scale, image.every, image.window) == (0.15, 2, (0.0, 0.6))
    assert RewardGuidance(tiny_reward, scale=0.3, window=(0.0, 0.5)).window == (0.0, 0.5)
    assert set(SCHEDULE_DEFAULTS) == {"noise-aware", "image"}
