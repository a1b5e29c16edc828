"""Reward guidance: gradients reach the latents, scale 0 changes nothing, the x0 of each supported scheduler is the
scheduler's own, unsupported schedulers are refused, and SD (the embedded model) and SDXL (tiny, random) both work."""

import json

import numpy as np
import pytest
import torch

from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, generate_to_folder, load_pipeline, plan_jobs
from richfeedback.guidance import (RewardGuidance, WeightedReward, check_scheduler, load_guidance, parse_reward_spec,
                                   predicted_x0)
from richfeedback.reward_models import load_reward_model

from conftest import build_tiny_sdxl

FAST = {**EMBEDDED_DEFAULTS, "num_inference_steps": 6}
PROMPTS = ["a red circle on the left", "two blue squares"]


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("embedded")


@pytest.fixture(scope="module")
def rahf_aesthetics():
    return load_reward_model("rahf:aesthetics")


def test_guided_steps_follow_every_and_window(rahf_aesthetics):
    g = RewardGuidance(rahf_aesthetics, scale=1.0, every=4, window=(0.0, 0.8))
    assert g.guided_steps(25) == [0, 4, 8, 12, 16]
    assert RewardGuidance(rahf_aesthetics, every=2, window=(0.2, 0.6)).guided_steps(10) == [2, 4]
    assert RewardGuidance(rahf_aesthetics, every=1, window=(0.0, 1.0)).guided_steps(3) == [0, 1, 2]


@pytest.mark.parametrize("path", ["cheap", "accurate"])
def test_reward_gradient_reaches_the_latents_and_is_finite(pipe, rahf_aesthetics, path):
    g = RewardGuidance(rahf_aesthetics, scale=0.1, every=1, window=(0.0, 1.0), path=path)
    images = generate_images(pipe, PROMPTS, [0, 1], guidance=g, **FAST)
    assert [h["step"] for h in g.history] == list(range(6))
    assert all(np.isfinite(h["grad_rms"]) and h["grad_rms"] > 0 for h in g.history)
    assert all(img.shape == (64, 64, 3) for img in images)
    if path == "accurate":  # the UNet call was replayed exactly as the pipeline made it (CFG included)
        assert max(h["recompute_error"] for h in g.history) < 1e-4


def test_jittered_views_and_gradient_smoothing():
    from richfeedback.guidance.reward_guidance import gaussian_blur, jittered_views

    images = torch.rand(2, 3, 64, 64)
    views = jittered_views(images, views=3, jitter=0.06, seed=5)
    assert views.shape == (6, 3, 64, 64)
    assert torch.equal(views, jittered_views(images, views=3, jitter=0.06, seed=5))  # its own seeded generator
    # each view is the image moved by whole pixels: a 60x52 centre crop of it appears in the view unchanged
    for view in views[::2]:
        assert any(torch.equal(view[:, 4 + dy : 56 + dy, 4 + dx : 56 + dx], images[0, :, 4:56, 4:56])
                   for dy in range(-4, 5) for dx in range(-4, 5))
    impulse = torch.zeros(1, 4, 16, 16)
    impulse[0, :, 8, 8] = 1.0
    blurred = gaussian_blur(impulse, sigma=1.0)
    assert blurred.shape == impulse.shape and abs(float(blurred.sum()) - 4.0) < 1e-5
    assert float(blurred[0, 0, 8, 8]) < 0.2 and float(blurred[0, 0, 8, 9]) > 0.05


def test_averaged_views_and_smoothing_guide_with_finite_gradients(pipe, rahf_aesthetics):
    g = RewardGuidance(rahf_aesthetics, scale=0.1, every=2, window=(0.0, 1.0), views=3, jitter=0.06, smooth=1.0)
    generate_images(pipe, PROMPTS, [0, 1], guidance=g, **FAST)
    assert [h["step"] for h in g.history] == [0, 2, 4]
    assert all(np.isfinite(h["grad_rms"]) and h["grad_rms"] > 0 for h in g.history)
    assert g.settings()["views"] == 3 and g.settings()["smooth"] == 1.0


def test_a_tiny_decoder_replaces_the_vae_in_the_reward_gradient_only(pipe, rahf_aesthetics, tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1),
                    decoder_block_out_channels=(8, 8, 8), num_decoder_blocks=(1, 1, 1)).save_pretrained(tmp_path / "td")
    calls = {"tiny": 0, "vae": 0}
    vae_hook = pipe.vae.decoder.register_forward_hook(lambda *a: calls.__setitem__("vae", calls["vae"] + 1))
    try:
        g = load_guidance("rahf:aesthetics", scale=0.1, every=2, window=(0.0, 1.0), decoder=str(tmp_path / "td"))
        tiny = g.decoder_for(pipe)
        assert isinstance(tiny, AutoencoderTiny) and not any(p.requires_grad for p in tiny.parameters())
        tiny.decoder.register_forward_hook(lambda *a: calls.__setitem__("tiny", calls["tiny"] + 1))
        generate_images(pipe, PROMPTS, [0, 1], guidance=g, **FAST)
    finally:
        vae_hook.remove()
    assert calls == {"tiny": 3, "vae": 1}  # a decode per guided step; the VAE decodes the final images only
    assert all(np.isfinite(h["grad_rms"]) and h["grad_rms"] > 0 for h in g.history)
    assert g.settings()["decoder"] == str(tmp_path / "td")
    # "auto": the shipped tiny decoder on the embedded generator, the pipeline's VAE on any other; "vae" always is
    shipped = RewardGuidance(rahf_aesthetics).decoder_for(pipe)
    assert isinstance(shipped, AutoencoderTiny) and shipped.config.scaling_factor == 1.0
    assert RewardGuidance(rahf_aesthetics, decoder="vae").decoder_for(pipe) is pipe.vae
    other = type("OtherPipe", (), {"name_or_path": str(tmp_path), "vae": pipe.vae})()
    assert RewardGuidance(rahf_aesthetics).decoder_for(other) is pipe.vae
    with pytest.raises(ValueError, match="AutoencoderTiny"):
        RewardGuidance(rahf_aesthetics, decoder=str(tmp_path / "missing")).decoder_for(pipe)


def test_recording_predicted_x0_sees_every_step_and_changes_nothing(pipe):
    from richfeedback.guidance.schedulers import recording_predicted_x0

    plain = generate_images(pipe, PROMPTS, [5, 6], **FAST)
    with recording_predicted_x0(pipe) as recorded:
        seen = generate_images(pipe, PROMPTS, [5, 6], **FAST)
    assert len(recorded) == FAST["num_inference_steps"] and recorded[0].shape == (2, 4, 16, 16)
    assert all(np.array_equal(a, b) for a, b in zip(plain, seen))
    assert pipe.scheduler.step.__func__ is type(pipe.scheduler).step


def test_scale_zero_reproduces_the_unguided_images_exactly(pipe, rahf_aesthetics):
    unguided = generate_images(pipe, PROMPTS, [3, 4], **FAST)
    zero = generate_images(pipe, PROMPTS, [3, 4], guidance=RewardGuidance(rahf_aesthetics, scale=0.0), **FAST)
    assert all(np.array_equal(a, b) for a, b in zip(unguided, zero))
    assert pipe.scheduler.step.__func__ is type(pipe.scheduler).step  # the wrapper is gone after the call


@pytest.mark.parametrize("decoder", ["auto", "vae"])  # the embedded tiny decoder, and the VAE
def test_guidance_raises_the_guiding_reward_on_the_same_seeds(pipe, rahf_aesthetics, decoder):
    prompts = ["a red circle on the left", "a green triangle on the right", "two yellow squares", "a blue circle"]
    unguided = generate_images(pipe, prompts, [0, 1, 2, 3], **FAST)
    guidance = RewardGuidance(rahf_aesthetics, scale=0.3, every=1, decoder=decoder)  # 4 of the 6 steps
    guided = generate_images(pipe, prompts, [0, 1, 2, 3], guidance=guidance, **FAST)
    before, after = rahf_aesthetics.score(prompts, unguided), rahf_aesthetics.score(prompts, guided)
    assert after.mean() > before.mean() + 0.02
    assert not any(np.array_equal(a, b) for a, b in zip(unguided, guided))


def test_unsupported_scheduler_is_refused_with_a_clear_message(pipe, rahf_aesthetics):
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

    for cls in (DPMSolverMultistepScheduler, PNDMScheduler):
        with pytest.raises(ValueError, match=f"does not support {cls.__name__}.*DDIMScheduler.from_config"):
            check_scheduler(cls.from_config(pipe.scheduler.config))
    original = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    try:
        with pytest.raises(ValueError, match="does not support DPMSolverMultistepScheduler"):
            generate_images(pipe, PROMPTS[:1], [0], guidance=RewardGuidance(rahf_aesthetics, scale=0.1), **FAST)
    finally:
        pipe.scheduler = original


@pytest.mark.parametrize("name", ["DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler",
                                  "EulerAncestralDiscreteScheduler"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predicted_x0_is_the_schedulers_own(name, prediction_type):
    import diffusers

    scheduler = getattr(diffusers, name)(prediction_type=prediction_type, beta_schedule="scaled_linear",
                                         beta_start=0.00085, beta_end=0.012)
    scheduler.set_timesteps(10)
    check_scheduler(scheduler)
    torch.manual_seed(0)
    sample, output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = scheduler.timesteps[3]
    scheduler.scale_model_input(sample, t)  # as the pipelines do; sets the Euler schedulers' step index
    ours = predicted_x0(scheduler, output, t, sample)
    theirs = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(0)).pred_original_sample
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_reward_specs_parse_weights_and_weight_files():
    known = ["rahf:aesthetics", "rahf:plausibility", "aesthetic", "hpsv2.1"]
    terms = parse_reward_spec("0.7*rahf:aesthetics+0.3*rahf:plausibility", known)
    assert [(t.weight, t.name) for t in terms] == [(0.7, "rahf:aesthetics"), (0.3, "rahf:plausibility")]
    # "+" inside a weights file name does not split a term; only a "+" before a known name does
    terms = parse_reward_spec("aesthetic=w/sac+logos+ava1-l14-linearMSE.pth+-0.5*hpsv2.1", known)
    assert [(t.weight, t.name, t.weights) for t in terms] == [
        (1.0, "aesthetic", "w/sac+logos+ava1-l14-linearMSE.pth"), (-0.5, "hpsv2.1", None)]
    with pytest.raises(ValueError, match="cannot read the reward 'pickscore'"):
        parse_reward_spec("pickscore", known)
    with pytest.raises(ValueError, match="names a reward model twice"):
        parse_reward_spec("aesthetic+2*aesthetic", known)


@pytest.mark.parametrize("kind", ["lora", "lora+patch_head"])
def test_reward_specs_take_a_reward_adapter_and_load_it(tmp_path, kind):
    from richfeedback.guidance import load_reward
    from richfeedback.guidance.rewards import spec_of
    from richfeedback.reward_models import tiny_checkpoints as tiny
    from richfeedback.reward_models.adapters import AdapterSpec, add_adapter, save_adapter

    known = ["rahf:aesthetics", "aesthetic", "pickscore"]
    terms = parse_reward_spec("0.5*pickscore=w/ps,adapter=runs/a+0.5*rahf:aesthetics", known)
    assert [(t.weight, t.name, t.weights, t.adapter) for t in terms] == [
        (0.5, "pickscore", "w/ps", "runs/a"), (0.5, "rahf:aesthetics", None, None)]
    assert parse_reward_spec(spec_of(terms), known) == terms
    assert parse_reward_spec("pickscore,adapter=runs/a", known)[0].adapter == "runs/a"
    # the adapter is applied: the spec's scores are the adapted model's, not the base's
    weights = str(tiny.write_tiny_pickscore(tmp_path / "pickscore"))
    model = load_reward_model("pickscore", weights)
    trainable = add_adapter(model, AdapterSpec(kind=kind, r=4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in trainable:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    save_adapter(model, tmp_path / "adapter")
    images = [np.full((64, 64, 3), v, dtype=np.uint8) for v in (40, 200)]
    adapted = load_reward(f"pickscore={weights},adapter={tmp_path / 'adapter'}")
    torch.testing.assert_close(adapted.score(PROMPTS[0], images), model.score(PROMPTS[0], images))
    pixels = torch.rand(2, 3, 64, 64, requires_grad=True)  # the guidance path: gradients reach the image
    adapted.differentiable(PROMPTS[:2], pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert not torch.allclose(load_reward(f"pickscore={weights}").score(PROMPTS[0], images),
                              model.score(PROMPTS[0], images))


def test_weighted_combination_is_the_weighted_sum_of_its_rewards():
    guidance = load_guidance("0.7*rahf:aesthetics+0.3*rahf:plausibility", scale=0.1)
    assert isinstance(guidance.reward, WeightedReward) and guidance.settings()["reward"].startswith("0.7*")
    aes, plaus = load_reward_model("rahf:aesthetics"), load_reward_model("rahf:plausibility")
    images = torch.rand(2, 3, 64, 64)
    calls = []
    (shared,) = guidance.reward.models  # both rahf:* terms: one RAHF model, one forward pass
    hook = shared.model.register_forward_hook(lambda *a: calls.append(1))
    combined = guidance.reward.differentiable(PROMPTS, images)
    hook.remove()
    assert len(calls) == 1
    torch.testing.assert_close(combined,
                               0.7 * aes.differentiable(PROMPTS, images) + 0.3 * plaus.differentiable(PROMPTS, images))
    torch.testing.assert_close(guidance.reward.score(PROMPTS, list(images)),
                               0.7 * aes.score(PROMPTS, list(images)) + 0.3 * plaus.score(PROMPTS, list(images)))


def test_bad_options_are_refused(rahf_aesthetics):
    for kwargs, message in [({"scale": -1}, "scale must be"), ({"every": 0}, "every must be"),
                            ({"window": (0.5, 0.5)}, "window must satisfy"), ({"normalize": "l3"}, "normalize"),
                            ({"path": "fast"}, "path must be"), ({"views": 0}, "views >= 1"),
                            ({"jitter": 0.5}, "jitter < 0.5"), ({"smooth": -1}, "smooth >= 0")]:
        with pytest.raises(ValueError, match=message):
            RewardGuidance(rahf_aesthetics, **kwargs)


def test_folder_manifest_records_the_guidance_and_refuses_mixing(tmp_path):
    guidance = load_guidance("rahf:aesthetics", scale=0.1)
    jobs = plan_jobs(["a red circle on the left"], n_per_prompt=2, seed=0)
    generate_to_folder("embedded", jobs, tmp_path, progress=False, guidance=guidance, num_inference_steps=4)
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["guidance"] == guidance.settings() for r in rows)
    assert rows[0]["guidance"]["reward"] == "rahf:aesthetics" and rows[0]["guidance"]["scale"] == 0.1
    with pytest.raises(ValueError, match="other reward-guidance settings"):
        generate_to_folder("embedded", plan_jobs(["two blue squares"], 1, 0), tmp_path, progress=False,
                           num_inference_steps=4)


# ----------------------------------------------------------------------------- SDXL (tiny, random, offline)
@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    """diffusers' SDXL test configuration, random weights, CLIP tokenizers built offline (tests/conftest.py)."""
    return build_tiny_sdxl(tmp_path_factory.mktemp("clip-tokenizer"))


@pytest.fixture(scope="module")
def tiny_laion_aesthetic(tmp_path_factory):
    from richfeedback.reward_models.tiny_checkpoints import write_tiny_aesthetic

    return write_tiny_aesthetic(tmp_path_factory.mktemp("aesthetic")).parent


@pytest.mark.parametrize("path", ["cheap", "accurate"])
def test_sdxl_with_euler_is_guided_by_the_laion_aesthetic_reward(tiny_sdxl, tiny_laion_aesthetic, path):
    sampling = {"num_inference_steps": 2, "height": 64, "width": 64, "guidance_scale": 5.0}
    guidance = load_guidance(f"aesthetic={tiny_laion_aesthetic}", scale=0.5, every=1, window=(0.0, 1.0), path=path)
    unguided = generate_images(tiny_sdxl, PROMPTS, [0, 1], **sampling)
    guided = generate_images(tiny_sdxl, PROMPTS, [0, 1], guidance=guidance, **sampling)
    assert [h["step"] for h in guidance.history] == [0, 1]
    assert all(np.isfinite(h["grad_rms"]) and h["grad_rms"] > 0 for h in guidance.history)
    if path == "accurate":  # SDXL's added conditioning (pooled text, time ids) was replayed too
        assert max(h["recompute_error"] for h in guidance.history) < 1e-4
    assert not np.array_equal(unguided[0], guided[0])
    guidance.scale = 0.0
    assert all(np.array_equal(a, b) for a, b in
               zip(unguided, generate_images(tiny_sdxl, PROMPTS, [0, 1], guidance=guidance, **sampling)))


@pytest.mark.parametrize("name", ["DDIMScheduler", "EulerDiscreteScheduler"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_cheap_path_holds_the_predicted_noise_fixed_for_every_prediction_type(name, prediction_type):
    """Same x0 as the scheduler's; d x0 / d x_t = 1 / alpha whatever the network predicts (a "sample" model's x0
    used to have no path to x_t, and a v-model's gradient was abar times an epsilon model's)."""
    import diffusers

    from richfeedback.guidance.schedulers import _alpha_sigma, predicted_x0_fixed_noise

    extra = {"clip_sample": False} if name == "DDIMScheduler" else {}  # clipped pixels have no gradient
    scheduler = getattr(diffusers, name)(prediction_type=prediction_type, beta_schedule="scaled_linear",
                                         beta_start=0.00085, beta_end=0.012, **extra)
    scheduler.set_timesteps(10)
    torch.manual_seed(0)
    sample, output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = scheduler.timesteps[3]
    scheduler.scale_model_input(sample, t)
    x_t = sample.clone().requires_grad_(True)
    x0 = predicted_x0_fixed_noise(scheduler, output, t, x_t)
    torch.testing.assert_close(x0.detach(), predicted_x0(scheduler, output, t, sample), rtol=1e-5, atol=1e-5)
    (gradient,) = torch.autograd.grad(x0.sum(), x_t)
    alpha, _ = _alpha_sigma(scheduler, t, sample)
    torch.testing.assert_close(gradient, torch.full_like(sample, float(1 / alpha)), rtol=1e-5, atol=1e-6)


def test_img2img_is_guided_at_its_place_in_the_schedule_and_every_call_is_guided(pipe, rahf_aesthetics):
    """img2img runs the tail of the schedule; the window counts positions in the whole schedule, and a second call
    inside one `attach` is guided like the first."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    image = generate_images(pipe, PROMPTS[:1], [0], **FAST)[0]
    late = RewardGuidance(rahf_aesthetics, scale=0.1, every=1, window=(0.5, 1.0))
    early = RewardGuidance(rahf_aesthetics, scale=0.1, every=1, window=(0.0, 0.5))
    sampling = {"num_inference_steps": 10, "strength": 0.5, "guidance_scale": 4.0, "output_type": "np"}
    with late.attach(img2img, PROMPTS[:1]):
        img2img(PROMPTS[:1], image=image, generator=torch.Generator().manual_seed(0), **sampling)
        assert [h["step"] for h in late.history] == [5, 6, 7, 8, 9]
        img2img(PROMPTS[:1], image=image, generator=torch.Generator().manual_seed(0), **sampling)
        assert [h["step"] for h in late.history] == [5, 6, 7, 8, 9] * 2
    with early.attach(img2img, PROMPTS[:1]):  # the steps img2img skips are the ones this window guides
        img2img(PROMPTS[:1], image=image, generator=torch.Generator().manual_seed(0), **sampling)
    assert early.history == []
