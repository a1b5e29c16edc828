"""LAION aesthetic v2: a reduced MLP file in the linearMSE layout and a CLIP backbone folder next to it."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from richfeedback.reward_models import CheckpointError, load_reward_model
from richfeedback.reward_models.aesthetic import MLP_FILE
from richfeedback.reward_models.preprocess import CLIP_MEAN, CLIP_STD
from richfeedback.reward_models.tiny_checkpoints import write_tiny_aesthetic


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    return write_tiny_aesthetic(tmp_path_factory.mktemp("aesthetic"))


@pytest.fixture(scope="module")
def model(mlp_path):
    return load_reward_model("aesthetic", weights=mlp_path.parent)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(512, 512, 3), (300, 227, 3), (64, 64, 3)]]


def simple_inference(mlp_path, images):
    """improved-aesthetic-predictor's simple_inference.py, with the backbone as ddpo-pytorch builds it in transformers:
    clip preprocess, image embedding, numpy `normalized()` (zero norm -> 1), then the MLP."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(mlp_path.parent / "clip").eval()
    state = torch.load(mlp_path, map_location="cpu", weights_only=True)
    mlp = torch.nn.Sequential(torch.nn.Linear(24, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                              torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                              torch.nn.Linear(64, 16), torch.nn.Linear(16, 1)).eval()
    mlp.load_state_dict({k.removeprefix("layers."): v for k, v in state.items()})
    preprocess = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                          lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])

    def normalized(a, axis=-1, order=2):
        l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
        l2[l2 == 0] = 1
        return a / np.expand_dims(l2, axis)

    scores = []
    with torch.no_grad():
        for image in images:
            features = clip.get_image_features(pixel_values=preprocess(Image.fromarray(image))[None]).pooler_output
            embedding = torch.from_numpy(normalized(features.numpy())).float()
            scores.append(mlp(embedding)[0, 0])
    return torch.stack(scores)


def test_official_layout_loads_strictly_with_only_the_image_tower(mlp_path, model):
    assert list(torch.load(mlp_path, weights_only=True)) == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7)
                                                              for p in ("weight", "bias")]
    assert not any(name.startswith("text") for name, _ in model.vision.named_parameters())
    assert model.needs_prompt is False and model.name == "aesthetic"


def test_scores_equal_the_reference_inference(mlp_path, model, images):
    assert torch.allclose(model.score(None, images), simple_inference(mlp_path, images), atol=1e-5)


def test_scores_do_not_depend_on_batch_composition_or_prompts(model, images):
    together = model.score(None, images)
    alone = torch.cat([model.score(None, image) for image in images])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.equal(model.score(["x", "y", "z"], images), together)
    assert float(together.std()) > 0.01


def test_differentiable_path_gives_finite_gradients(model):
    pixels = torch.rand(2, 3, 64, 64, requires_grad=True)
    model.differentiable(None, pixels).sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_mlp_stays_float32_in_bf16(mlp_path, images):
    model = load_reward_model("aesthetic", weights=mlp_path, dtype="bf16")
    assert model.vision.dtype is torch.bfloat16 and model.mlp.layers[0].weight.dtype is torch.float32
    assert model.score(None, images).dtype is torch.float32


def test_relu_variant_layout_is_refused_by_name(mlp_path, tmp_path):
    state = torch.load(mlp_path, weights_only=True)
    relu_layout = OrderedDict((k.replace("layers.2.", "layers.3."), v) for k, v in state.items())
    torch.save(relu_layout, tmp_path / MLP_FILE)
    with pytest.raises(CheckpointError, match=r"missing: layers.2.weight.*unexpected: layers.3.weight.*reluMSE"):
        load_reward_model("aesthetic", weights=tmp_path / MLP_FILE, clip=str(mlp_path.parent / "clip"))


def test_an_mlp_for_another_embedding_size_is_refused(mlp_path, tmp_path):
    state = torch.load(mlp_path, weights_only=True)
    state["layers.0.weight"] = torch.zeros(1024, 768)  # the real ViT-L/14 MLP on the reduced backbone
    torch.save(state, tmp_path / MLP_FILE)
    with pytest.raises(CheckpointError, match="takes 768-d embeddings but the backbone .* gives 24-d"):
        load_reward_model("aesthetic", weights=tmp_path, clip=str(mlp_path.parent / "clip"))
