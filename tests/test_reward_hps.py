"""HPSv2 / v2.1: a reduced open_clip model with ViT-H-14's structure, saved as {"state_dict": ...} like the
official HPS_v2*_compressed.pt."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode, Normalize, ToTensor

from richfeedback.reward_models import CheckpointError, load_reward_model
from richfeedback.reward_models.preprocess import CLIP_MEAN, CLIP_STD
from richfeedback.reward_models.tiny_checkpoints import write_tiny_hps

PROMPTS = ["a red circle on the left", "two blue squares and a large yellow triangle at the top", "a cat"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_hps(tmp_path_factory.mktemp("hps"), version="v2.1")


@pytest.fixture(scope="module")
def model(checkpoint):
    path, config = checkpoint
    return load_reward_model("hpsv2.1", weights=path, config=config)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(512, 512, 3), (300, 227, 3), (64, 96, 3)]]


def hpsv2_score(path, config, prompt, images):
    """hpsv2.score(images, prompt) for a list: per image, preprocess_val, tokenize, encode, cosine (then x100 as the
    HPSv2 benchmark reports it). The model is open_clip's, loaded as HPSv2 loads it: strict load_state_dict."""
    import open_clip

    model = open_clip.create_model("ViT-H-14", pretrained=None, **config).eval()
    model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    tokenizer = open_clip.get_tokenizer("ViT-H-14")
    scores = []
    with torch.no_grad():
        for image in images:
            x = ToTensor()(Image.fromarray(image))  # preprocess_val: ToTensor, ResizeMaxSize(224), Normalize
            height, width = x.shape[1:]
            new = [round(side * 224 / max(height, width)) for side in (height, width)]
            x = TF.resize(x, new, InterpolationMode.BICUBIC)
            x = TF.pad(x, [(224 - new[1]) // 2, (224 - new[0]) // 2, 224 - new[1] - (224 - new[1]) // 2,
                           224 - new[0] - (224 - new[0]) // 2])
            x = Normalize(CLIP_MEAN, CLIP_STD)(x)[None]
            image_features = model.encode_image(x, normalize=True)
            text_features = model.encode_text(tokenizer([prompt]), normalize=True)
            scores.append(100 * torch.diagonal(image_features @ text_features.T))
    return torch.cat(scores)


def test_official_layout_loads_strictly(checkpoint, model):
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)
    assert list(state) == ["state_dict"]
    assert set(state["state_dict"]) == set(model.clip.state_dict())
    assert len(state["state_dict"]) == 14 + 12 * 2 + 12 * 2  # ViT-H-14 has 14 + 12 * 32 + 12 * 24 = 686
    assert model.name == "hpsv2.1"


def test_scores_equal_hpsv2_per_image_computation_times_100(checkpoint, model, images):
    path, config = checkpoint
    expected = hpsv2_score(path, config, PROMPTS[0], images)
    assert torch.allclose(model.score(PROMPTS[0], images), expected, atol=1e-4)


def test_scores_do_not_depend_on_batch_composition(model, images):
    together = model.score(PROMPTS, images)
    alone = torch.cat([model.score(p, im) for p, im in zip(PROMPTS, images)])
    assert torch.allclose(together, alone, atol=1e-4)
    assert float(together.std()) > 0.5


def test_tensor_and_pixel_inputs_score_the_same_because_hps_resizes_tensors(model, images):
    pixels = torch.from_numpy(images[1]).permute(2, 0, 1).float() / 255
    assert torch.allclose(model.score(PROMPTS[0], pixels), model.score(PROMPTS[0], images[1]), atol=1e-5)


def test_differentiable_path_gives_finite_gradients(model):
    pixels = torch.rand(2, 3, 96, 128, requires_grad=True)
    model.differentiable(PROMPTS[:2], pixels).sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_v2_0_loads_its_own_file_name(tmp_path):
    path, config = write_tiny_hps(tmp_path, version="v2.0")
    assert path.name == "HPS_v2_compressed.pt"
    assert load_reward_model("hpsv2", weights=tmp_path, config=config).name == "hpsv2"


def test_a_file_that_does_not_fit_the_config_is_refused_with_the_shapes(checkpoint):
    path, config = checkpoint
    other = {**config, "embed_dim": 16}  # as a reduced file loaded without its config= meets the full ViT-H-14
    expected = r"with other shapes: text_projection \(file \(32, 32\), model \(32, 16\)\)"
    with pytest.raises(CheckpointError, match=expected):
        load_reward_model("hpsv2.1", weights=path, config=other)


def test_a_bare_state_dict_is_refused_because_hps_files_wrap_it(checkpoint, tmp_path):
    path, config = checkpoint
    torch.save(torch.load(path, weights_only=True)["state_dict"], tmp_path / "HPS_v2.1_compressed.pt")
    with pytest.raises(CheckpointError, match=r"\{'state_dict': \.\.\.\}"):
        load_reward_model("hpsv2.1", weights=tmp_path, config=config)
