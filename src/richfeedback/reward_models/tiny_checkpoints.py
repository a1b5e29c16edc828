"""Reduced reward-model checkpoints in the official file formats, for tests and benchmarks (nothing downloaded).

Each writer builds a small random model with the official key names and wrapping and writes it where and how the
official files are written:

- pickscore: a transformers CLIPModel folder (model.safetensors with the legacy position_ids keys PickScore_v1's
  file has, config.json), plus the CLIP tokenizer files and preprocessor_config.json.
- clipscore: the same with quick_gelu, as OpenAI's CLIPs.
- hpsv2 / hpsv2.1: `HPS_v2(.1)_compressed.pt` = torch.save({"state_dict": state_dict of an open_clip model with
  ViT-H-14's structure}).
- imagereward: `ImageReward.pt` = torch.save(a bare state_dict with the official layout's names, including the
  position_ids, vision_proj and text_proj keys), plus med_config.json and a BERT vocab.txt.
- aesthetic: `sac+logos+ava1-l14-linearMSE.pth` = torch.save(OrderedDict of layers.{0,2,4,6,7}), plus a `clip/`
  transformers CLIP folder.

The reduced architectures are returned as the `config=` the loaders need where the official file does not carry one.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

from ..tokenizers import write_clip_tokenizer_files

CLIP_VOCAB = 49408

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB, "width": 32, "heads": 4, "layers": 2},
}

# preprocessor_config.json of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (PickScore's processor), in its legacy format.
LAION_CLIP_PREPROCESSOR = {
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224,
}

# Words of the ShapesWorld grammar and a few more, for a BERT WordPiece vocabulary that tokenizes test prompts.
_BERT_WORDS = ("a an the on of and in at to with one two three red green blue yellow purple circle circles square "
               "squares triangle triangles small large left right top bottom center photo cat dog image").split()


def _seeded(seed: int):
    return torch.Generator().manual_seed(seed)


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Variance-preserving random weights, so that different images and prompts get clearly different scores
    (default inits zero many biases and leave the score heads nearly constant)."""
    generator = _seeded(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in ** 0.5)
            elif "norm" in name.lower() and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))


def tiny_clip_config(quick_gelu: bool = False, projection_dim: int = 24):
    from transformers import CLIPConfig

    act = "quick_gelu" if quick_gelu else "gelu"
    return CLIPConfig(
        text_config=dict(vocab_size=CLIP_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act=act,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=14, hidden_act=act),
        projection_dim=projection_dim)


def write_clip_folder(folder, *, seed: int = 0, quick_gelu: bool = False, projection_dim: int = 24,
                      legacy_position_ids: bool = False, processor: bool = True) -> Path:
    """A transformers CLIPModel folder (safetensors), optionally with the tokenizer and image processor files."""
    from safetensors.torch import save_file
    from transformers import CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = CLIPModel(tiny_clip_config(quick_gelu, projection_dim))
    _randomize(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)  # ln(100), as trained CLIPs end up
    model.save_pretrained(folder)
    if legacy_position_ids:
        # Checkpoints saved before transformers 4.31 (PickScore_v1 among them) also store these two buffers.
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
        state["vision_model.embeddings.position_ids"] = torch.arange((224 // 14) ** 2 + 1)[None]
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if processor:
        write_clip_tokenizer_files(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(LAION_CLIP_PREPROCESSOR, indent=2))
    return folder


def write_tiny_pickscore(folder, seed: int = 0) -> Path:
    return write_clip_folder(folder, seed=seed, legacy_position_ids=True)


def write_tiny_clipscore(folder, seed: int = 3) -> Path:
    # seed 3: the test prompts and images get cosines of both signs, so max(cos, 0) is exercised both ways
    return write_clip_folder(folder, seed=seed, quick_gelu=True)


def write_tiny_hps(folder, version: str = "v2.1", seed: int = 2) -> tuple[Path, dict]:
    """(checkpoint path, the open_clip config to pass as config=)."""
    from .hps import FILES, build_open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = build_open_clip(TINY_OPEN_CLIP)
    _randomize(model, seed)
    path = folder / FILES[version]
    torch.save({"state_dict": model.state_dict()}, path)
    return path, json.loads(json.dumps(TINY_OPEN_CLIP))


def tiny_imagereward_config():
    from .imagereward import ImageRewardConfig

    return ImageRewardConfig(
        image_size=224, patch_size=16, vision_width=64, vision_layers=2, vision_heads=4,
        vocab_size=len(_bert_vocab()) + 2, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40)


def _bert_vocab() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_BERT_WORDS, "##s", "##ed", "##ing"]


def write_tiny_imagereward(folder, seed: int = 3):
    """(checkpoint path, the ImageRewardConfig to pass as config=). The file has every key of the official layout."""
    from .imagereward import ImageReward

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_imagereward_config()
    (folder / "vocab.txt").write_text("\n".join(_bert_vocab()) + "\n")
    med_config = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                  "hidden_dropout_prob": 0.1, "hidden_size": config.hidden_size, "initializer_range": 0.02,
                  "intermediate_size": config.intermediate_size, "layer_norm_eps": 1e-12,
                  "max_position_embeddings": config.max_position_embeddings, "model_type": "bert",
                  "num_attention_heads": config.num_attention_heads, "num_hidden_layers": config.num_hidden_layers,
                  "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": config.vocab_size,
                  "encoder_width": config.vision_width, "add_cross_attention": True}
    (folder / "med_config.json").write_text(json.dumps(med_config, indent=2))

    model = ImageReward(config, tokenizer=None)
    _randomize(model, seed)
    state = OrderedDict(model.state_dict())
    generator = _seeded(seed + 100)
    # The keys of the official file that our model does not hold (see imagereward.SKIPPED_KEYS).
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    state["blip.vision_proj.weight"] = torch.randn(256, config.vision_width, generator=generator) * 0.02
    state["blip.vision_proj.bias"] = torch.zeros(256)
    state["blip.text_proj.weight"] = torch.randn(256, config.hidden_size, generator=generator) * 0.02
    state["blip.text_proj.bias"] = torch.zeros(256)
    path = folder / "ImageReward.pt"
    torch.save(state, path)
    return path, config


def write_tiny_aesthetic(folder, seed: int = 4) -> Path:
    """The MLP file (input size = the tiny CLIP's projection size) and a `clip/` backbone folder next to it."""
    from .aesthetic import MLP_FILE
    from .heads import LinearMLPHead

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_clip_folder(folder / "clip", seed=seed, quick_gelu=True, projection_dim=24, processor=False)
    mlp = LinearMLPHead(24)
    _randomize(mlp, seed)
    torch.save(OrderedDict(mlp.state_dict()), folder / MLP_FILE)
    return folder / MLP_FILE
