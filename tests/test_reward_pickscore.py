"""PickScore: a reduced CLIPModel folder in PickScore_v1's format, scored as the PickScore README scores."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from richfeedback.reward_models import CheckpointError, load_reward_model
from richfeedback.reward_models.tiny_checkpoints import write_tiny_pickscore

PROMPTS = ["a red circle on the left", "two blue squares and a large yellow triangle at the top",
           "a red circle on the left"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_pickscore(tmp_path_factory.mktemp("pickscore"))


@pytest.fixture(scope="module")
def model(folder):
    return load_reward_model("pickscore", weights=folder)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(512, 512, 3), (300, 400, 3), (64, 64, 3)]]


def readme_scores(folder, prompt, images):
    """PickScore's README `calc_probs`, with the processor's PIL backend (what PickScore was trained with)."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    image_processor = CLIPImageProcessorPil.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        image_inputs = image_processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
        text_inputs = tokenizer(prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
        image_embs = model.get_image_features(**image_inputs).pooler_output
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = model.get_text_features(**text_inputs).pooler_output
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        return model.logit_scale.exp() * (text_embs @ image_embs.T)[0]


def test_official_layout_loads_strictly_including_the_legacy_position_ids(folder, model):
    keys = load_file(str(folder / "model.safetensors"))
    assert "text_model.embeddings.position_ids" in keys and "vision_model.embeddings.position_ids" in keys
    assert model.name == "pickscore" and model.source == str(folder)


def test_scores_equal_the_readme_computation(folder, model, images):
    expected = readme_scores(folder, PROMPTS[0], images)
    assert torch.allclose(model.score(PROMPTS[0], images), expected, atol=1e-4)


def test_probs_are_a_softmax_over_the_candidates_of_one_prompt(folder, model, images):
    probs = model.probs(PROMPTS[0], images)
    assert torch.allclose(probs, readme_scores(folder, PROMPTS[0], images).softmax(0), atol=1e-5)
    assert abs(float(probs.sum()) - 1) < 1e-6


def test_scores_do_not_depend_on_batch_composition(model, images):
    together = model.score(PROMPTS, images)  # prompts of different lengths: padded and masked
    alone = torch.cat([model.score(p, im) for p, im in zip(PROMPTS, images)])
    assert torch.allclose(together, alone, atol=1e-4)
    assert float(together.std()) > 0.1  # the images really score differently


def test_differentiable_path_matches_score_and_gives_finite_gradients(model, images):
    pixels = torch.from_numpy(images[0]).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    score = model.differentiable(PROMPTS[0], pixels)
    score.sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    assert abs(float(score.detach() - model.score(PROMPTS[0], images[0]))) < 0.05  # tensor vs PIL resize


def test_missing_or_extra_weights_are_refused_with_their_names(folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    state = load_file(str(broken / "model.safetensors"))
    del state["text_model.final_layer_norm.weight"]
    state["head.extra"] = torch.zeros(2)
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing: text_model.final_layer_norm.weight.*unexpected: head.extra"):
        load_reward_model("pickscore", weights=broken)
