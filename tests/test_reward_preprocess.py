"""Our preprocessing against each reward model's reference recipe.

Pixel (uint8) inputs must match the references exactly. Float tensors go through the differentiable tensor version;
where the reference resizes 8-bit images with PIL, that version stays within 1.5 uint8 levels of it at every pixel and
0.4 levels on average, even on uniform noise (the worst case for a bicubic kernel): PIL rounds each pass to 8 bits,
the float path does not. Differences are measured in uint8 levels (1/255 of the [0, 1] range) before normalisation.
"""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from richfeedback.reward_models.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform

# (height, width): square and landscape downscales, odd crop margins (224x227: 3 px, rounded vs floored), portrait,
# and an upscale of a ShapesWorld-sized image.
SHAPES = [(512, 512), (384, 512), (224, 227), (300, 227), (64, 64)]

STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def noise_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def levels(a, b):
    """|a - b| in uint8 levels, for two normalised (3, H, W) tensors."""
    return ((a - b) * STD).abs() * 255


def clip_package_transform(size=224):
    """The `clip` package's / ImageReward's `_transform`: torchvision on PIL."""
    return Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size),
                    lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])


def hpsv2_val_transform(image, size=224):
    """HPSv2's preprocess_val (light_augmentation), restated with torchvision: ToTensor, the longer side to `size`
    on the float tensor (sides rounded), zero padding centred, Normalize."""
    x = ToTensor()(image)
    height, width = x.shape[1:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_size = tuple(round(dim * scale) for dim in (height, width))
        x = TF.resize(x, list(new_size), InterpolationMode.BICUBIC)
        pad_h, pad_w = size - new_size[0], size - new_size[1]
        x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return Normalize(CLIP_MEAN, CLIP_STD)(x)


def test_resized_shapes_follow_each_reference_rounding():
    clip = ImageTransform()
    hps = ImageTransform(resize="longest", reference_resize="tensor")
    assert clip.resized_shape(512, 768) == (224, 336)
    assert clip.resized_shape(300, 227) == (296, 224)  # int(224 * 300 / 227) = int(296.04)
    assert hps.resized_shape(300, 227) == (224, 169)  # round(227 * 224 / 300) = round(169.49)
    assert hps.pad_box(224, 169) == (27, 28, 0, 0)  # (left, right, top, bottom)


def test_centre_crop_offset_is_rounded_for_torchvision_and_floored_for_transformers():
    # a 3-pixel margin: torchvision's round(1.5) = 2, transformers' 3 // 2 = 1
    assert ImageTransform(crop_offset="round").crop_box(224, 227) == (0, 2)
    assert ImageTransform(crop_offset="floor").crop_box(224, 227) == (0, 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_pixels_match_the_clip_package_transform_exactly(shape):
    image = noise_image(*shape)
    reference = clip_package_transform()(Image.fromarray(image))
    ours = ImageTransform(crop_offset="round").from_pixels(image)
    assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_pixels_match_transformers_clip_processor_pil_backend_exactly(shape):
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    image = noise_image(*shape)
    reference = processor(images=Image.fromarray(image), return_tensors="pt").pixel_values[0]
    ours = ImageTransform(crop_offset="floor").from_pixels(image)
    assert torch.allclose(ours, reference, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_pixels_are_within_two_levels_of_transformers_default_clip_processor(shape):
    # transformers 5's default CLIPImageProcessor resizes uint8 tensors with torchvision, not PIL.
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    image = noise_image(*shape)
    reference = processor(images=Image.fromarray(image), return_tensors="pt").pixel_values[0]
    difference = levels(ImageTransform(crop_offset="floor").from_pixels(image), reference)
    assert difference.max() <= 2.0 + 1e-3
    assert difference.mean() <= 0.05


@pytest.mark.parametrize("shape", SHAPES)
def test_tensor_path_is_within_one_and_a_half_levels_of_pil(shape):
    image = noise_image(*shape)
    reference = clip_package_transform()(Image.fromarray(image))
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    difference = levels(ImageTransform(crop_offset="round").from_tensor(pixels)[0], reference)
    assert difference.max() <= 1.5
    assert difference.mean() <= 0.4


@pytest.mark.parametrize("shape", SHAPES)
def test_hps_matches_hpsv2_val_transform_exactly_for_pixels_and_tensors(shape):
    image = noise_image(*shape)
    reference = hpsv2_val_transform(Image.fromarray(image))
    transform = ImageTransform(resize="longest", reference_resize="tensor")
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    assert torch.allclose(transform.from_pixels(image), reference, atol=1e-6)
    assert torch.allclose(transform.from_tensor(pixels)[0], reference, atol=1e-6)


def test_hps_differs_from_upstream_open_clip_longest_mode_only_by_the_resize_backend():
    # upstream open_clip's resize_mode="longest" resizes the PIL image instead of the float tensor: same geometry,
    # PIL's 8-bit passes. On a smooth image that is under half a level on average.
    from open_clip.transform import image_transform

    base = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(base).resize((512, 384), Image.BILINEAR))
    upstream = image_transform(224, is_train=False, resize_mode="longest")(Image.fromarray(image))
    ours = ImageTransform(resize="longest", reference_resize="tensor").from_pixels(image)
    assert ours.shape == upstream.shape == (3, 224, 224)
    assert levels(ours, upstream).mean() <= 0.5


@pytest.mark.parametrize("transform", [ImageTransform(), ImageTransform(resize="longest", reference_resize="tensor")],
                         ids=["clip", "hps"])
def test_tensor_path_gives_finite_gradients_to_every_pixel(transform):
    images = torch.rand(2, 3, 100, 100, requires_grad=True)  # square: no pixel is cropped away
    transform.from_tensor(images).square().sum().backward()
    assert torch.isfinite(images.grad).all()
    assert (images.grad.abs().sum(dim=1) > 0).all()
