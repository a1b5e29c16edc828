"""Inpainting candidates with diffusers (4- and 9-channel UNets), the compositing guarantee, and best-of-N."""

import numpy as np
import pytest
import torch

from richfeedback.inpaint.masks import feather_mask
from richfeedback.inpaint.repair import composite, inpaint_candidates, latent_cell, load_inpaint_pipeline
from richfeedback.inpaint.selection import select_best
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene

FAST = {"num_inference_steps": 3, "guidance_scale": 4.0, "height": 64, "width": 64, "strength": 1.0}


@pytest.fixture(scope="module")
def pipe():
    return load_inpaint_pipeline(None)  # the embedded inpainting model (9 channels)


@pytest.fixture(scope="module")
def generator_pipe():
    return load_inpaint_pipeline("embedded-generator")  # the embedded text-to-image model (4 channels)


@pytest.fixture(scope="module")
def scene_image():
    return render(sample_scene(np.random.default_rng(3)))


def centre_mask(size=64, lo=20, hi=40):
    mask = np.zeros((size, size), bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_composite_keeps_every_pixel_outside_the_mask_bit_for_bit():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    repaired = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = centre_mask(32, 8, 20)
    out = composite(original, repaired, feather_mask(mask, 3))
    assert (out[~mask] == original[~mask]).all()
    assert (out[14, 14] == repaired[14, 14]).all()  # deep inside: the repair itself
    assert (composite(original, repaired, np.ones((32, 32), np.float32)) == repaired).all()


def test_embedded_inpainter_is_a_9_channel_checkpoint_and_the_generator_the_4_channel_blending_path(
        pipe, generator_pipe):
    assert type(pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert pipe.unet.config.in_channels == 9
    assert type(generator_pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert generator_pipe.unet.config.in_channels == 4
    assert latent_cell(pipe) == latent_cell(generator_pipe) == 4


def test_a_converted_unet_starts_as_the_original(generator_pipe):
    from richfeedback.inpaint.convert import inpainting_unet

    unet = generator_pipe.unet
    nine = inpainting_unet(unet)
    assert nine.config.in_channels == 9 and unet.config.in_channels == 4
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 16, 16)
    extra = torch.randn(2, 5, 16, 16)  # mask and masked-image latents: zero weight before fine-tuning
    states = torch.randn(2, 8, unet.config.cross_attention_dim)
    with torch.no_grad():
        expected = unet(latents, 500, states).sample
        got = nine(torch.cat([latents, extra], 1), 500, states).sample
    torch.testing.assert_close(got, expected)
    assert nine.conv_in.weight[:, 4:].abs().sum() == 0 and unet.conv_in.weight.shape[1] == 4


def test_the_4_channel_blending_path_leaves_the_outside_unchanged_after_compositing(generator_pipe, scene_image):
    mask = centre_mask()
    raw = inpaint_candidates(generator_pipe, scene_image, mask, "a red circle", [0, 1], **FAST)
    assert np.abs(raw[0].astype(int) - scene_image.astype(int))[~mask].max() > 0
    for candidate in raw:
        assert (composite(scene_image, candidate, feather_mask(mask, 2))[~mask] == scene_image[~mask]).all()


def test_candidates_pasted_back_leave_the_outside_unchanged(pipe, scene_image):
    mask = centre_mask()
    alpha = feather_mask(mask, 2)
    raw = inpaint_candidates(pipe, scene_image, mask, "a red circle", [0, 1, 2], **FAST)
    assert len(raw) == 3 and raw[0].shape == scene_image.shape and raw[0].dtype == np.uint8
    drift = np.abs(raw[0].astype(int) - scene_image.astype(int))[~mask].max()
    assert drift > 0  # the pipeline alone does change pixels outside the mask (VAE round trip) ...
    for candidate in raw:
        fixed = composite(scene_image, candidate, alpha)
        assert (fixed[~mask] == scene_image[~mask]).all()  # ... the composite puts them back exactly
    assert not np.array_equal(raw[0][mask], raw[1][mask])  # different seeds, different repairs


def test_candidates_reproduce_and_the_first_is_the_same_alone_or_in_a_batch(pipe, scene_image):
    mask = centre_mask(lo=8, hi=40)  # over an object: different noise gives visibly different repairs
    sampling = {**FAST, "num_inference_steps": 6}  # at 3 steps the tiny model draws nearly the same for any noise
    together = inpaint_candidates(pipe, scene_image, mask, "two red triangles", [5, 6, 7], **sampling)
    again = inpaint_candidates(pipe, scene_image, mask, "two red triangles", [5, 6, 7], **sampling)
    alone = inpaint_candidates(pipe, scene_image, mask, "two red triangles", [5], **sampling)
    assert all(np.array_equal(a, b) for a, b in zip(together, again))
    # N=1 is candidate 0 of N=3, up to the float noise of batched kernels (a few grey levels).
    difference = np.abs(together[0].astype(int) - alone[0].astype(int))
    assert difference.max() <= 8 and difference.mean() < 0.5
    assert np.abs(together[0].astype(int) - together[1].astype(int)).max() > 30


def test_crop_around_the_mask_is_pasted_back_at_the_image_size(pipe, scene_image):
    mask = centre_mask(lo=24, hi=32)
    raw = inpaint_candidates(pipe, scene_image, mask, "a red circle", [0], crop_padding=4, **FAST)
    fixed = composite(scene_image, raw[0], feather_mask(mask, 1))
    assert fixed.shape == scene_image.shape
    assert (fixed[~mask] == scene_image[~mask]).all()
    assert not np.array_equal(fixed[mask], scene_image[mask])


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="empty mask"):
        inpaint_candidates(None, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), "x", [0])


def test_any_9_channel_inpainting_unet_works_through_the_same_call(generator_pipe, scene_image):
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=9,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=generator_pipe.text_encoder.config.hidden_size,
                                norm_num_groups=4)
    components = {**generator_pipe.components, "unet": unet}
    nine = StableDiffusionInpaintPipeline(**components)
    nine.set_progress_bar_config(disable=True)
    mask = centre_mask()
    raw = inpaint_candidates(nine, scene_image, mask, "a red circle", [0, 1], **FAST)
    fixed = composite(scene_image, raw[0], feather_mask(mask, 2))
    assert (fixed[~mask] == scene_image[~mask]).all()


def test_best_candidate_is_kept_only_when_it_beats_the_original():
    assert select_best(0.5, [0.4, 0.7, 0.6]).chosen == 1
    kept = select_best(0.8, [0.4, 0.7, 0.6])
    assert kept.chosen is None and kept.best_score == 0.8
    assert select_best(0.8, [0.4, 0.7, 0.6], keep_original=False).chosen == 1
    assert select_best(0.7, [0.7]).chosen is None  # a tie does not replace the original
    # candidates the alignment guard rules out cannot be chosen, whatever they score
    guarded = select_best(0.5, [0.4, 0.9, 0.6], eligible=[True, False, True])
    assert guarded.chosen == 2 and guarded.best_allowed_score == 0.6
    assert select_best(0.5, [0.9], eligible=[False]).chosen is None
    assert select_best(0.5, [0.9], keep_original=False, eligible=[False]).chosen is None


class FakeAlignment:
    """A stand-in RAHF: implausibility heat = red channel, and an alignment score per image from a lookup."""

    def __init__(self, alignment_of):
        self.alignment_of = alignment_of

    def heatmaps(self, prompts, images):
        return FakeHeatmaps().heatmaps(prompts, images)

    def outputs(self, prompts, images, names):
        alignment = torch.tensor([self.alignment_of(np.asarray(i)) for i in images], dtype=torch.float32)
        maps = self.heatmaps(prompts, images)
        return {name: maps[name] if name in maps else alignment for name in names}  # every score: the alignment


def test_the_alignment_guard_keeps_the_input_when_every_candidate_loses_alignment(pipe):
    import dataclasses

    from richfeedback.inpaint.fix import FixSettings, InpaintFixer
    from richfeedback.inpaint.selection import MaskHeatScore

    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 20:40, 0] = 255  # a hot (red) square: the defect the fake heatmap sees
    # the original is perfectly aligned; every repaint (anything not bit-identical) loses 0.5 alignment
    model = FakeAlignment(lambda a: 1.0 if np.array_equal(a, image) else 0.5)
    settings = FixSettings(n=2, sampling=dict(FAST), keep_original=False)  # even "always replace" obeys the guard
    guarded = InpaintFixer(pipe, model, MaskHeatScore(model), settings).fix(image, "a red square")
    assert guarded.status == "kept_original" and guarded.chosen is None and (guarded.image == image).all()
    assert guarded.eligible == [False, False] and guarded.alignment == [1.0, 0.5, 0.5]
    assert "lowers RAHF alignment by more than 0.1" in guarded.message
    off = InpaintFixer(pipe, model, MaskHeatScore(model), dataclasses.replace(settings, alignment_guard=None))
    unguarded = off.fix(image, "a red square")
    assert unguarded.status == "fixed" and unguarded.eligible is None
    tolerant = InpaintFixer(pipe, model, MaskHeatScore(model), dataclasses.replace(settings, alignment_guard=0.6))
    assert tolerant.fix(image, "a red square").chosen == unguarded.chosen
    with pytest.raises(ValueError, match="alignment_guard"):
        FixSettings(alignment_guard=-1)


class FakeHeatmaps:
    """A stand-in RAHF whose heatmaps are each image's red channel (hot = red), at a coarser resolution."""

    def heatmaps(self, prompts, images):
        red = torch.tensor(np.stack([np.asarray(i)[::4, ::4, 0] / 255.0 for i in images]), dtype=torch.float32)
        return {"implausibility": red, "misalignment": torch.zeros_like(red)}


def test_mask_heat_picks_the_candidate_coldest_inside_the_mask_not_overall():
    from richfeedback.inpaint.selection import MASK_HEAT, MaskHeatScore, load_selection_reward

    mask = centre_mask()
    original = np.zeros((64, 64, 3), np.uint8)
    original[mask] = 200  # the defect: hot inside the mask
    cold_inside = original.copy()
    cold_inside[mask] = 0
    cold_inside[~mask] = 255  # hotter than anything overall, but only outside the mask
    half = original.copy()
    half[mask] = 100
    reward = MaskHeatScore(FakeHeatmaps())
    assert reward.name == MASK_HEAT

    def score_and_select(reward, prompt, original, candidates, mask=None):
        scores = reward.score([prompt] * (1 + len(candidates)), [original, *candidates], mask=mask).tolist()
        return select_best(scores[0], scores[1:])

    picked = score_and_select(reward, "x", original, [half, cold_inside], mask=mask)
    assert picked.chosen == 1 and picked.candidate_scores[1] > picked.candidate_scores[0] > picked.original_score
    # the mean of the two heatmaps inside the mask (up to the bilinear resize's blur at the mask's rim)
    assert picked.original_score == pytest.approx(-200 / 255 / 2, abs=0.05)
    assert picked.candidate_scores[1] == pytest.approx(0.0, abs=0.1)
    overall = score_and_select(reward, "x", original, [half, cold_inside])  # no mask: the whole image counts
    assert overall.chosen == 0
    assert score_and_select(reward, "x", original, [original], mask=mask).chosen is None  # a tie keeps the input
    assert isinstance(load_selection_reward(None, rahf=FakeHeatmaps()), MaskHeatScore)  # the default


class ConstantReward:
    """A selection reward that is not RAHF: the original scores 0.5, candidate 0 of n scores n, the last 1."""

    name = "constant"

    def score(self, prompts, images):
        return torch.tensor([0.5, *range(len(images) - 1, 0, -1)], dtype=torch.float32)


def test_rahf_sees_the_input_once_and_each_candidate_at_most_once_and_reports_their_scores(pipe, scene_image):
    import dataclasses

    from richfeedback.inpaint.fix import FixSettings, InpaintFixer
    from richfeedback.inpaint.selection import MaskHeatScore
    from richfeedback.reward_models import load_reward_model

    rahf = load_reward_model("rahf:plausibility")
    seen = []
    rahf.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(len(kwargs["pixel_values"])),
                                         with_kwargs=True)
    settings = FixSettings(n=3, sampling=dict(FAST), artifact_model=None)
    mask = centre_mask()

    def images_through_rahf(fixer, **kwargs):
        seen.clear()
        return fixer.fix(scene_image, "a red circle", **kwargs), sum(seen)

    # the defaults (mask heat, alignment guard): one pass over the input, one over the candidates
    result, images = images_through_rahf(InpaintFixer(pipe, rahf, MaskHeatScore(rahf), settings), mask=mask)
    assert images == 1 + 3 and result.alignment is not None
    direct = rahf.all_scores("a red circle", [scene_image, result.image])
    assert result.rahf_before == pytest.approx({k: float(v[0]) for k, v in direct.items()}, abs=1e-5)
    assert result.rahf_after == pytest.approx({k: float(v[1]) for k, v in direct.items()}, abs=1e-5)
    assert result.alignment[0] == pytest.approx(result.rahf_before["alignment"])
    # a RAHF score as the reward, no guard: the same two passes, and the reward is the score itself
    plausibility = dataclasses.replace(settings, alignment_guard=None, keep_original=False)
    result, images = images_through_rahf(InpaintFixer(pipe, rahf, rahf.for_score("plausibility"), plausibility),
                                         mask=mask)
    assert images == 1 + 3 and result.status == "fixed"
    scores = rahf.score("a red circle", [scene_image, *result.candidates]).tolist()
    assert [result.original_score, *result.candidate_scores] == pytest.approx(scores, abs=1e-5)
    # another reward, no guard: RAHF scores the input, then only the chosen candidate, for the report
    result, images = images_through_rahf(InpaintFixer(pipe, rahf, ConstantReward(), plausibility), mask=mask)
    assert images == 1 + 1 and result.chosen == 0
    assert result.rahf_after == pytest.approx(
        {k: float(v[0]) for k, v in rahf.all_scores("a red circle", [result.image]).items()}, abs=1e-5)
    # nothing to fix: the input's one pass serves the report and the reward
    result, images = images_through_rahf(InpaintFixer(pipe, rahf, MaskHeatScore(rahf), settings),
                                         heatmap=np.zeros((64, 64), np.float32))
    assert result.status == "nothing_to_fix" and images == 1 and result.rahf_after == result.rahf_before


def test_rahf_reward_terms_are_the_heatmap_models_scores_not_the_embedded_rahfs():
    """With --heatmap-model, `--reward rahf:plausibility` must score with that RAHF (loaded once), not silently with
    the embedded ShapesWorld one; a term that names its own weights still gets them."""
    from richfeedback.inpaint.fix import FixSettings, InpaintFixer, rahf_score_weights
    from richfeedback.reward_models.rahf.predict import embedded_rahf_path

    mine = str(embedded_rahf_path())  # a RAHF folder given by path, as a user's would be
    fixer = InpaintFixer.load(heatmap_model=mine, reward="0.7*rahf:plausibility+0.3*rahf:aesthetics",
                              settings=FixSettings(n=1, sampling=dict(FAST)))
    (summed,) = fixer.reward.models  # one RAHF forward pass for both terms: the heatmap model's
    assert summed.model is fixer.heatmap_model.model
    assert rahf_score_weights(fixer.reward, fixer.heatmap_model) == {"plausibility": 0.7, "aesthetics": 0.3}
    other = InpaintFixer.load(heatmap_model=mine, reward=f"rahf:plausibility={mine}",
                              settings=FixSettings(n=1, sampling=dict(FAST)))
    assert other.reward.model is not other.heatmap_model.model  # its own weights: its own model
    assert rahf_score_weights(other.reward, other.heatmap_model) is None
    # what the reports' resume key says: the heatmap model's scores, or a fingerprint of the term's own weights
    assert fixer.models["reward_weights"] == "heatmap_model"
    assert other.models["reward_weights"] == other.models["heatmap_model_weights"] == fixer.models[
        "heatmap_model_weights"]  # the same files, loaded twice: the same fingerprint
