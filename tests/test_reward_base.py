"""The RewardModel interface (inputs, batching, dtypes), the registry, and the errors for missing or unsafe weights."""

import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image

from richfeedback.imaging import ImageLoadError
from richfeedback.reward_models import (CheckpointError, WeightsNotFoundError, list_reward_models, load_reward_model,
                                        parse_dtype, register_reward_model)
from richfeedback.reward_models.base import RewardModel, prepare
from richfeedback.reward_models.preprocess import ImageTransform
from richfeedback.reward_models.registry import _REGISTRY


class MeanRedness(RewardModel):
    """A stand-in model: a learned scale times the mean of the red channel, plus the prompt's length."""

    name = "redness"

    def __init__(self, max_batch_size=32):
        super().__init__(ImageTransform(size=32), max_batch_size)
        self.gain = torch.nn.Parameter(torch.tensor(2.0))
        self.batch_sizes = []

    def forward(self, prompts, pixel_values):
        self.batch_sizes.append(pixel_values.shape[0])
        return self.gain * pixel_values[:, 0].mean(dim=(1, 2)) + torch.tensor([len(p) for p in prompts]) / 100


def image(seed, size=(40, 48)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture
def model():
    return prepare(MeanRedness(max_batch_size=3))


def test_pil_path_array_and_uint8_tensor_inputs_score_identically(model, tmp_path):
    pixels = image(0)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    inputs = [Image.fromarray(pixels), tmp_path / "a.png", str(tmp_path / "a.png"), pixels,
              torch.from_numpy(pixels).permute(2, 0, 1)]
    scores = model.score("p", inputs)
    assert torch.equal(scores, scores[:1].expand(5))


def test_float_tensor_input_scores_within_preprocessing_tolerance_of_the_same_pixels(model):
    pixels = image(1)
    as_float = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    scores = model.score("p", [pixels, as_float])
    assert abs(float(scores[0] - scores[1])) < 1e-3


def test_a_batch_tensor_is_split_into_images_and_batches_respect_max_batch_size(model):
    scores = model.score("p", torch.rand(7, 3, 40, 40))
    assert scores.shape == (7,)
    assert model.batch_sizes == [3, 3, 1]


def test_scores_do_not_depend_on_batch_composition(model):
    images, prompts = [image(i) for i in range(5)], ["a", "bb", "ccc", "dddd", "e"]
    together = model.score(prompts, images)
    alone = torch.cat([model.score(p, im) for p, im in zip(prompts, images)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_one_prompt_is_used_for_every_image_and_a_wrong_count_is_refused(model):
    assert torch.equal(model.score("x", [image(0), image(0)]), model.score(["x", "x"], [image(0), image(0)]))
    with pytest.raises(ValueError, match="got 2 prompts for 3 images"):
        model.score(["a", "b"], [image(0), image(1), image(2)])


def test_float_images_outside_unit_range_are_refused_with_the_vae_fix(model):
    with pytest.raises(ValueError, match=r"\[0, 1\].*\(x / 2 \+ 0.5\)"):
        model.score("p", torch.rand(1, 3, 8, 8) * 2 - 1)


def test_unreadable_file_raises_image_load_error_naming_it(model, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        model.score("p", [tmp_path / "broken.png"])


def test_differentiable_path_keeps_weights_frozen_and_gives_image_gradients(model):
    images = torch.rand(5, 3, 40, 40, requires_grad=True)
    model.differentiable("p", images).sum().backward()
    assert model.gain.grad is None
    assert torch.isfinite(images.grad).all() and images.grad[:, 0].abs().min() > 0
    assert model.batch_sizes == [3, 2]


def test_dtype_names_and_bf16_models_return_float32_scores():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("fp16") is torch.float16
    assert parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="fp32, fp16 or bf16"):
        parse_dtype("int8")
    model = prepare(MeanRedness(), dtype="bf16")
    assert model.gain.dtype is torch.bfloat16 and model.dtype is torch.bfloat16
    assert model.score("p", image(0)).dtype is torch.float32


def test_registry_lists_every_family_and_rejects_unknown_names():
    assert {"pickscore", "hpsv2", "hpsv2.1", "imagereward", "aesthetic", "clipscore"} <= set(list_reward_models())
    with pytest.raises(KeyError, match="unknown reward model 'pickscor'.*pickscore"):
        load_reward_model("pickscor")


def test_another_module_can_register_a_family_by_callable_or_by_import_path():
    calls = []

    @register_reward_model("rahf:test-callable", description="test")
    def load(weights, *, device, dtype, max_batch_size, **options):
        calls.append((weights, device, dtype, max_batch_size, options))
        return prepare(MeanRedness(max_batch_size))

    register_reward_model("rahf:test-path", "test_reward_base:MeanRedness_factory")
    try:
        assert "rahf:test-callable" in list_reward_models()
        model = load_reward_model("rahf:test-callable", "w.pt", dtype="bf16", max_batch_size=4, extra=1)
        assert isinstance(model, MeanRedness) and calls == [("w.pt", "cpu", "bf16", 4, {"extra": 1})]
        assert _REGISTRY["rahf:test-path"].factory == "test_reward_base:MeanRedness_factory"
        with pytest.raises(ValueError, match="already registered"):
            register_reward_model("rahf:test-callable", load)
    finally:
        _REGISTRY.pop("rahf:test-callable", None)
        _REGISTRY.pop("rahf:test-path", None)


# Each family, with no weights on disk and the hub offline: the error names what to fetch and where to put it.
MISSING = {
    "hpsv2": ["HPS_v2_compressed.pt", "xswu/HPSv2"],
    "hpsv2.1": ["HPS_v2.1_compressed.pt", "xswu/HPSv2"],
    "imagereward": ["ImageReward.pt", "THUDM/ImageReward"],
    "aesthetic": ["sac+logos+ava1-l14-linearMSE.pth", "camenduru/improved-aesthetic-predictor"],
    "pickscore": ["yuvalkirstain/PickScore_v1"],
    "clipscore": ["openai/clip-vit-base-patch32"],
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_weights_offline_name_the_file_the_hub_repo_and_the_folder(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RICHFEEDBACK_WEIGHTS", str(tmp_path))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(WeightsNotFoundError) as caught:
        load_reward_model(name)
    message = str(caught.value)
    for needle in MISSING[name] + ["hf download", str(tmp_path / name), "HF_HUB_OFFLINE=1", "searched by default"]:
        assert needle in message, needle
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no hub traceback attached


def test_a_missing_weights_path_is_named_in_the_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nothing-here.pt"):
        load_reward_model("hpsv2.1", weights=tmp_path / "nothing-here.pt")
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2.1_compressed.pt not found \(looked in: " + str(tmp_path)):
        load_reward_model("hpsv2.1", weights=tmp_path)  # a folder without the official file


def test_checkpoints_with_pickled_objects_are_refused_not_unpickled(tmp_path):
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_reward_model("hpsv2.1", weights=path)


def MeanRedness_factory(weights, **options):
    return prepare(MeanRedness())
