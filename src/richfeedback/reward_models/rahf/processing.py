"""RAHF's inputs and outputs: image preprocessing, tokenization, and reading the marked prompt back into word labels.

Images follow `google/vit-large-patch16-384`'s processor (bilinear resize to the model's size, rescale to [0, 1],
normalise with mean = std = 0.5, so pixels land in [-1, 1]); float tensors in [0, 1] take a differentiable path with
the same steps. The prompt is RichHF's `clean_prompt` (words split on `,.?!":;` and spaces, joined by one space);
the decoder's target is the `labeled_prompt`, with each misaligned word suffixed `_0`.

The ShapesWorld tokenizer is a small T5-style Unigram tokenizer trained offline on the grammar's words (no hub, no
sentencepiece); the `large` size uses t5-base's tokenizer from a local folder or the hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .configuration import RAHFConfig
from .modeling import TASKS, task_prompt

MISALIGNED_SUFFIX = "_0"


def clean_prompt(prompt: str) -> str:
    from ...shapesworld.scene import prompt_words

    return " ".join(prompt_words(prompt))


def shapesworld_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Text the ShapesWorld tokenizer is trained on: prompts, their marked versions, and the task prompts."""
    from ...shapesworld.scene import COLORS, POSITIONS, SHAPES, SIZE_WORDS, sample_prompt

    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        words = clean_prompt(sample_prompt(rng).text).split()
        texts.append(" ".join(words))
        texts.append(" ".join(w + MISALIGNED_SUFFIX if rng.random() < 0.3 else w for w in words))
    vocabulary = list(COLORS) + list(SHAPES) + [s + "s" for s in SHAPES] + list(POSITIONS) + list(SIZE_WORDS)
    vocabulary += ["a", "two", "three", "and", "on", "in", "the"]
    texts += [" ".join(w + MISALIGNED_SUFFIX for w in vocabulary)] * 50
    texts += [task_prompt(kind, name, "") for kind, name in TASKS] * 50
    return texts


def build_shapesworld_tokenizer(out_dir: Optional[str | os.PathLike] = None, vocab_size: int = 200, seed: int = 0):
    """A T5TokenizerFast (Unigram, "▁" metaspace, <pad>=0, </s>=1, <unk>=2, "$A </s>") trained on ShapesWorld text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", shrinking_factor=0.75)
    tokenizer.train_from_iterator(shapesworld_corpus(seed=seed), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0)
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


SHAPESWORLD_TOKENIZER = Path(__file__).resolve().parent / "model_configs" / "shapesworld-tokenizer"


def load_shapesworld_tokenizer():
    """The ShapesWorld tokenizer shipped with the package (made once by `build_shapesworld_tokenizer`; the Unigram
    trainer is not deterministic across runs, so models and tests share this one file)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SHAPESWORLD_TOKENIZER))


def marked_word_flags(labeled_prompt: str) -> list[int]:
    """Per word of a labeled prompt ("a red_0 circle"), 1 if it is marked misaligned, else 0."""
    return [int(w.endswith(MISALIGNED_SUFFIX)) for w in labeled_prompt.split()]


def mark_token_ids(tokenizer) -> list[int]:
    """The token ids that marking a word misaligned adds to it, in order (tokenizing "word_0" against "word")."""
    plain = tokenizer("word", add_special_tokens=False).input_ids
    marked = tokenizer("word" + MISALIGNED_SUFFIX, add_special_tokens=False).input_ids
    added = [t for t in marked if t not in plain]
    if not added:
        raise ValueError(f"the tokenizer writes 'word{MISALIGNED_SUFFIX}' with the tokens of 'word': its marks "
                         "cannot be weighted in the loss or biased when decoding")
    return added


def load_tokenizer(config: RAHFConfig, model_dir: Optional[str | os.PathLike] = None):
    """The tokenizer saved beside a model, else the one its config names ("shapesworld" is built offline)."""
    from transformers import AutoTokenizer

    if model_dir is not None:
        # Saved in a tokenizer/ subfolder (a tokenizer beside config.json would read the RAHF config as its own).
        for folder in (Path(model_dir) / "tokenizer", Path(model_dir)):
            if (folder / "tokenizer_config.json").exists():
                return AutoTokenizer.from_pretrained(str(folder))
    if config.tokenizer == "shapesworld":
        return load_shapesworld_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(config.tokenizer)
    except OSError as err:
        raise FileNotFoundError(
            f"RAHF needs the tokenizer {config.tokenizer!r}: pass a local folder with its files (for the public "
            f"checkpoint: t5-base's tokenizer.json / spiece.model) or run where the hub is reachable"
        ) from err


class RAHFProcessor:
    """Turns images and prompts into model inputs, and model outputs into heatmaps, scores and word labels."""

    def __init__(self, tokenizer, config: RAHFConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.image_size = config.vit["image_size"]

    # -- images --------------------------------------------------------------------------------------------------

    def preprocess_images(self, images: Sequence) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1]. PIL images / uint8 arrays go through PIL's bilinear resize as ViTImageProcessor
        does; float tensors (B, 3, H, W) in [0, 1] take the differentiable path (antialiased bilinear)."""
        if isinstance(images, torch.Tensor):
            return self.preprocess_tensor(images)
        arrays = []
        for image in images:
            if isinstance(image, (str, os.PathLike)):
                from ...imaging import load_rgb

                image = load_rgb(image)
            pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
            pil = pil.convert("RGB")
            if pil.size != (self.image_size, self.image_size):
                pil = pil.resize((self.image_size, self.image_size), Image.BILINEAR)
            arrays.append(np.asarray(pil, dtype=np.float32) / 255.0)
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return (pixels - 0.5) / 0.5

    def preprocess_tensor(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensors must be (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (images - 0.5) / 0.5

    def preprocess_heatmaps(self, maps: Sequence) -> torch.Tensor:
        """(B, S, S) in [0, 1] from "L" images or uint8 arrays (RichHF's heatmaps are 512x512, resized bilinearly)."""
        out = []
        for m in maps:
            pil = m if isinstance(m, Image.Image) else Image.fromarray(np.asarray(m, dtype=np.uint8))
            pil = pil.convert("L")
            if pil.size != (self.image_size, self.image_size):
                pil = pil.resize((self.image_size, self.image_size), Image.BILINEAR)
            out.append(np.asarray(pil, dtype=np.float32) / 255.0)
        return torch.from_numpy(np.stack(out))

    # -- text ----------------------------------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]):
        return self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.config.max_prompt_tokens,
                              return_tensors="pt")

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self._encode(texts)
        return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}

    def token_targets(self, prompts: Sequence[str], word_values: Sequence[Sequence], encoding=None) -> torch.Tensor:
        """(B, L, D): per token of `tokenize(prompts)`, the tuple `word_values[b][w]` (D numbers) of the word it
        belongs to, NaN for special tokens, padding and words whose value is None. `encoding`: the prompts' `_encode`
        result, if already computed (`text_inputs` passes the one its input ids come from)."""
        prompts = [clean_prompt(p) for p in prompts]
        enc = encoding if encoding is not None else self._encode(prompts)
        n_words = [len(p.split()) for p in prompts]
        width = next((len(v) for values in word_values for v in values if v is not None), 1)
        # a table per prompt of its words' values, with a last all-NaN row that tokens of no word (or no value) read
        table = torch.full((len(prompts), max(n_words) + 1, width), float("nan"))
        for b, values in enumerate(word_values):
            if len(values) != n_words[b]:
                raise ValueError(f"{len(values)} word values for the {n_words[b]} words of {prompts[b]!r}")
            for w, value in enumerate(values):
                if value is not None:
                    table[b, w] = torch.tensor(value, dtype=torch.float32)
        nan_row = table.shape[1] - 1
        index = torch.tensor([[nan_row if w is None else w for w in enc.word_ids(b)] for b in range(len(prompts))])
        return table.gather(1, index.unsqueeze(-1).expand(-1, -1, width))

    def text_inputs(self, prompts: Sequence[str], labeled_prompts: Optional[Sequence[str]] = None,
                    word_targets: Optional[dict[str, Sequence[Sequence]]] = None) -> dict:
        """Input ids and attention mask of the prompts (and the augmented variant's task prompts); with
        `labeled_prompts` the decoder's `labels`; with `word_targets` ({name: per word of each prompt, a tuple or
        None}) `target_token_<name>` per token (`token_targets`), from the same tokenization as the input ids."""
        prompts = [clean_prompt(p) for p in prompts]
        encoding = self._encode(prompts)
        inputs = {"input_ids": encoding.input_ids, "attention_mask": encoding.attention_mask}
        if self.config.variant == "augmented_prompt":
            tasks = self.tokenize([task_prompt(kind, name, p) for p in prompts for kind, name in TASKS])
            b = len(prompts)
            inputs["task_input_ids"] = tasks["input_ids"].reshape(b, len(TASKS), -1)
            inputs["task_attention_mask"] = tasks["attention_mask"].reshape(b, len(TASKS), -1)
        if labeled_prompts is not None:
            labels = self.tokenize(list(labeled_prompts))
            inputs["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
        for name, word_values in (word_targets or {}).items():
            inputs[f"target_token_{name}"] = self.token_targets(prompts, word_values, encoding)
        return inputs

    def __call__(self, images, prompts: Sequence[str], labeled_prompts: Optional[Sequence[str]] = None) -> dict:
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images and {len(prompts)} prompts; give one prompt per image")
        return {"pixel_values": self.preprocess_images(images), **self.text_inputs(prompts, labeled_prompts)}

    # -- outputs -------------------------------------------------------------------------------------------------

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    @staticmethod
    def misaligned_words(marked: str, prompt: str) -> list[int]:
        """Per word of the prompt, 1 if the model marked it misaligned (`word_0`), else 0; read position by position
        as the reference metric does (a missing or different word counts as not marked)."""
        words = clean_prompt(prompt).split()
        predicted = marked.split() + [""] * len(words)
        return [int(p == w + MISALIGNED_SUFFIX) for w, p in zip(words, predicted)]
