"""CLIPScore: CLIP-S = 2.5 * max(cos, 0) with the prompt prefixed "A photo depicts " (Hessel et al. 2021)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from richfeedback.reward_models import load_reward_model
from richfeedback.reward_models.preprocess import CLIP_MEAN, CLIP_STD
from richfeedback.reward_models.tiny_checkpoints import write_tiny_clipscore

PROMPTS = ["a red circle on the left", "two blue squares and a large yellow triangle at the top", "a photo of a cat"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_clipscore(tmp_path_factory.mktemp("clipscore"))


@pytest.fixture(scope="module")
def model(folder):
    return load_reward_model("clipscore", weights=folder)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(512, 512, 3), (300, 227, 3), (64, 64, 3)]]


def hessel_cosines(folder, prompts, images, prefix="A photo depicts "):
    """jmhessel/clipscore's computation: clip preprocess, prefixed captions, normalised features, cosine."""
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    preprocess = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                          lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.fromarray(image)) for image in images])
        image_features = clip.get_image_features(pixel_values=pixels).pooler_output
        tokens = tokenizer([prefix + p for p in prompts], padding=True, truncation=True, return_tensors="pt")
        text_features = clip.get_text_features(**tokens).pooler_output
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return (image_features * text_features).sum(-1)


def test_score_is_2_5_times_the_positive_part_of_the_prefixed_cosine(folder, model, images):
    cosines = hessel_cosines(folder, PROMPTS, images)
    assert (cosines > 0).any() and (cosines < 0).any()  # both branches of max(cos, 0) are exercised
    assert torch.allclose(model.score(PROMPTS, images), 2.5 * cosines.clamp(min=0), atol=1e-5)


def test_prefix_and_weight_are_options(folder, images):
    model = load_reward_model("clipscore", weights=folder, prefix="", weight=100.0)  # torchmetrics' convention
    expected = 100 * hessel_cosines(folder, PROMPTS, images, prefix="").clamp(min=0)
    assert torch.allclose(model.score(PROMPTS, images), expected, atol=1e-3)


def test_scores_do_not_depend_on_batch_composition(model, images):
    together = model.score(PROMPTS, images)
    alone = torch.cat([model.score(p, im) for p, im in zip(PROMPTS, images)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_differentiable_path_gives_finite_gradients(model, images):
    pixels = torch.from_numpy(np.stack(images[:1])).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    score = model.differentiable(PROMPTS[1], pixels)
    score.sum().backward()
    assert torch.isfinite(pixels.grad).all()


def test_text_is_cleaned_like_the_clip_packages_tokenizer_and_a_prefix_gets_its_space(folder, images):
    from richfeedback.reward_models.clipscore import clean_text

    assert clean_text("a red  circle &amp;amp; a \u201cblue\u201d  square ") == 'a red circle & a "blue" square'
    model = load_reward_model("clipscore", weights=folder)
    plain = model.score(["a red circle & a blue square"], images[:1])
    assert torch.equal(model.score(["a red circle &amp; a  blue square"], images[:1]), plain)
    spaced = load_reward_model("clipscore", weights=folder, prefix="A photo depicts")
    assert spaced.prefix == "A photo depicts " and torch.equal(spaced.score(PROMPTS, images), model.score(PROMPTS, images))
