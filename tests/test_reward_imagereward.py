"""ImageReward: a reduced model saved like ImageReward.pt (a bare state_dict with every key of the official layout).

The `image-reward` package cannot be imported with transformers 5, so the references here are (1) its scoring
procedure, restated step by step (per-image loop, torchvision `_transform` on PIL, BERT tokens padded to 35, [CLS] ->
MLP -> (r - mean) / std), and (2) BLIP's ViT and med.py BERT layer written out from their formulas in plain torch.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from richfeedback.reward_models import CheckpointError, load_reward_model
from richfeedback.reward_models.imagereward import SKIPPED_KEYS, ImageReward, ImageRewardConfig, load_bert_tokenizer
from richfeedback.reward_models.preprocess import CLIP_MEAN, CLIP_STD
from richfeedback.reward_models.tiny_checkpoints import write_tiny_imagereward

PROMPTS = ["a red circle on the left", "two blue squares and a large yellow triangle at the top", "a photo of a cat"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_imagereward(tmp_path_factory.mktemp("imagereward"))


@pytest.fixture(scope="module")
def model(checkpoint):
    path, config = checkpoint
    return load_reward_model("imagereward", weights=path, config=config)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(512, 512, 3), (300, 227, 3), (64, 64, 3)]]


def package_inference_rank(path, config, prompt, images):
    """ImageReward.inference_rank as the package runs it, on a model loaded as the package loads it (strict=False)."""
    model = ImageReward(config, load_bert_tokenizer(str(path.parent))).eval()
    model.load_state_dict(torch.load(path, weights_only=True), strict=False)
    preprocess = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                          lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    text_input = model.tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    features = []
    with torch.no_grad():
        for image in images:
            x = preprocess(Image.fromarray(image)).unsqueeze(0)
            image_embeds = model.blip.visual_encoder.forward_features(x)
            image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
            output = model.blip.text_encoder(text_input.input_ids, attention_mask=text_input.attention_mask,
                                             encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
            features.append(output.last_hidden_state[:, 0, :])
        rewards = model.mlp.layers(torch.cat(features, 0).float())
        rewards = torch.squeeze((rewards - 0.16717362830052426) / 1.0333394966054072)
    _, rank = torch.sort(rewards, dim=0, descending=True)
    _, indices = torch.sort(rank, dim=0)
    return (indices + 1).tolist(), rewards


def blip_vit_from_formulas(state, config, x):
    """BLIP's VisionTransformer.forward written out: patchify, [CLS] + positions, pre-norm blocks, final norm."""
    p = {k.removeprefix("blip.visual_encoder."): v for k, v in state.items() if k.startswith("blip.visual_encoder.")}
    x = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=config.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([p["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + p["pos_embed"]
    heads, width = config.vision_heads, config.vision_width
    for i in range(config.vision_layers):
        b = lambda name: p[f"blocks.{i}.{name}"]
        h = F.layer_norm(x, (width,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        qkv = F.linear(h, b("attn.qkv.weight"), b("attn.qkv.bias")).reshape(x.shape[0], x.shape[1], 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        h = (attention @ v).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(h, b("attn.proj.weight"), b("attn.proj.bias"))
        h = F.layer_norm(x, (width,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        h = F.gelu(F.linear(h, b("mlp.fc1.weight"), b("mlp.fc1.bias")))
        x = x + F.linear(h, b("mlp.fc2.weight"), b("mlp.fc2.bias"))
    return F.layer_norm(x, (width,), p["norm.weight"], p["norm.bias"], eps=1e-6)


def med_bert_from_formulas(state, config, input_ids, attention_mask, image_embeds):
    """med.py's BertModel (mode='multimodal') written out: post-norm layers of self-attention (padding masked with
    -10000 as med.py does), cross-attention to all image tokens, and the GELU feed-forward."""
    p = {k.removeprefix("blip.text_encoder."): v for k, v in state.items() if k.startswith("blip.text_encoder.")}
    hidden, heads, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
    ln = lambda x, name: F.layer_norm(x, (hidden,), p[f"{name}.weight"], p[f"{name}.bias"], eps=eps)
    lin = lambda x, name: F.linear(x, p[f"{name}.weight"], p[f"{name}.bias"])

    def attend(prefix, queries, keys_values, mask):
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        q, k, v = (split(lin(src, f"{prefix}.self.{n}")) for src, n in
                   ((queries, "query"), (keys_values, "key"), (keys_values, "value")))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(queries.shape)
        return ln(lin(context, f"{prefix}.output.dense") + queries, f"{prefix}.output.LayerNorm")

    positions = torch.arange(input_ids.shape[1])
    x = ln(p["embeddings.word_embeddings.weight"][input_ids] + p["embeddings.position_embeddings.weight"][positions],
           "embeddings.LayerNorm")
    self_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
    for i in range(config.num_hidden_layers):
        x = attend(f"encoder.layer.{i}.attention", x, x, self_mask)
        x = attend(f"encoder.layer.{i}.crossattention", x, image_embeds, 0.0)
        h = F.gelu(lin(x, f"encoder.layer.{i}.intermediate.dense"))
        x = ln(lin(h, f"encoder.layer.{i}.output.dense") + x, f"encoder.layer.{i}.output.LayerNorm")
    return x


def test_the_file_has_the_official_key_layout_and_loads_with_five_keys_skipped(checkpoint, model):
    path, config = checkpoint
    state = torch.load(path, weights_only=True)
    keys_for = lambda vision_layers, text_layers: (4 + 12 * vision_layers + 2) + (5 + 26 * text_layers) + 4 + 10
    assert keys_for(24, 12) == 625  # the official file
    assert len(state) == keys_for(config.vision_layers, config.num_hidden_layers)
    assert set(state) - set(model.state_dict()) == set(SKIPPED_KEYS)
    assert set(model.state_dict()) <= set(state)


def test_network_equals_blip_vit_and_med_bert_written_from_their_formulas(checkpoint, model):
    path, config = checkpoint
    state = torch.load(path, weights_only=True)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = model.tokenizer(PROMPTS[:2], padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        image_embeds = model.blip.visual_encoder.forward_features(pixels)
        text = model.blip.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask,
                                       encoder_hidden_states=image_embeds).last_hidden_state
        expected_image = blip_vit_from_formulas(state, config, pixels)
        expected_text = med_bert_from_formulas(state, config, tokens.input_ids, tokens.attention_mask, expected_image)
    assert torch.allclose(image_embeds, expected_image, atol=1e-5)
    assert torch.allclose(text[:, 0], expected_text[:, 0], atol=1e-5)  # the [CLS] state the MLP reads


def test_scores_and_ranks_equal_the_package_per_image_procedure(checkpoint, model, images):
    path, config = checkpoint
    ranks, rewards = package_inference_rank(path, config, PROMPTS[0], images)
    assert torch.allclose(model.score(PROMPTS[0], images), rewards, atol=1e-5)
    our_ranks, our_rewards = model.inference_rank(PROMPTS[0], images)
    assert our_ranks == ranks and sorted(our_ranks) == [1, 2, 3]
    assert our_ranks[int(np.argmax(our_rewards))] == 1


def test_scores_do_not_depend_on_batch_composition(model, images):
    together = model.score(PROMPTS, images)
    alone = torch.cat([model.score(p, im) for p, im in zip(PROMPTS, images)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert float(together.std()) > 0.05


def test_differentiable_path_gives_finite_gradients(model):
    pixels = torch.rand(2, 3, 64, 64, requires_grad=True)
    model.differentiable(PROMPTS[:2], pixels).sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_unexpected_keys_are_named_and_the_skipped_ones_explained(checkpoint, tmp_path):
    path, config = checkpoint
    state = torch.load(path, weights_only=True)
    state["blip.itm_head.weight"] = torch.zeros(2, 4)
    torch.save(state, tmp_path / "ImageReward.pt")
    (tmp_path / "vocab.txt").write_text((path.parent / "vocab.txt").read_text())
    with pytest.raises(CheckpointError, match=r"1 keys unexpected: blip.itm_head.weight.*blip.vision_proj.weight "
                                              r"\(BLIP's contrastive image projection, unused"):
        load_reward_model("imagereward", weights=tmp_path, config=config)


def test_position_ids_that_are_not_arange_are_refused(checkpoint, tmp_path):
    path, config = checkpoint
    state = torch.load(path, weights_only=True)
    state["blip.text_encoder.embeddings.position_ids"] = state["blip.text_encoder.embeddings.position_ids"].flip(-1)
    torch.save(state, tmp_path / "ImageReward.pt")
    (tmp_path / "vocab.txt").write_text((path.parent / "vocab.txt").read_text())
    with pytest.raises(CheckpointError, match="position_ids that are not arange"):
        load_reward_model("imagereward", weights=tmp_path, config=config)


def test_med_config_sets_the_text_side_and_the_defaults_are_the_published_architecture(checkpoint):
    path, config = checkpoint
    from_file = ImageRewardConfig().with_med_config(path.parent / "med_config.json")
    assert from_file == replace(ImageRewardConfig(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=40, vocab_size=config.vocab_size)
    published = ImageRewardConfig()
    assert (published.vision_width, published.vision_layers, published.patch_size, published.vocab_size) == (
        1024, 24, 16, 30524)


def test_tokenizer_adds_dec_and_enc_after_the_bert_vocabulary(checkpoint):
    path, config = checkpoint
    tokenizer = load_bert_tokenizer(str(path.parent))
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [config.vocab_size - 2, config.vocab_size - 1]
    assert tokenizer.bos_token == "[DEC]"
