"""Tokenizers built offline from files that installed packages already ship.

No hub is reachable on our machines, so the CLIP tokenizer of the embedded generator is built from the BPE vocabulary
that `open_clip` ships (`bpe_simple_vocab_16e6.txt.gz`). The result is an ordinary transformers `CLIPTokenizer`
(vocab.json + merges.txt) whose ids equal open_clip's; it differs only in padding, which uses `<|endoftext|>` as
Stable Diffusion 1.x does (open_clip pads with 0).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from transformers import CLIPTokenizer

CLIP_VOCAB_SIZE = 49408
_NUM_MERGES = CLIP_VOCAB_SIZE - 256 - 256 - 2  # vocab = bytes, bytes + </w>, merges, two special tokens


def open_clip_bpe_path() -> Path:
    """The BPE vocabulary file inside the installed open_clip package."""
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - open_clip is a dependency
        raise ImportError("building the CLIP tokenizer offline needs `open_clip_torch` installed") from err
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed open_clip; reinstall open_clip_torch")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_tokenizer_files(out_dir: str | os.PathLike, bpe_path: str | os.PathLike | None = None,
                               model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json for CLIP's tokenizer into `out_dir`."""
    bpe_path = Path(bpe_path) if bpe_path is not None else open_clip_bpe_path()
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : _NUM_MERGES + 1]
    merges = [tuple(m.split()) for m in merges]
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{bpe_path} gave a vocabulary of {len(vocab)} entries, expected {CLIP_VOCAB_SIZE}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out


def build_clip_tokenizer(out_dir: str | os.PathLike, model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's BPE tokenizer from open_clip's vocabulary file, saved to and loaded from `out_dir`."""
    write_clip_tokenizer_files(out_dir, model_max_length=model_max_length)
    # Loading through from_pretrained avoids transformers 5's keyword pitfall: CLIPTokenizer(vocab_file=...) is
    # silently ignored and yields a 2-token tokenizer.
    return CLIPTokenizer.from_pretrained(str(out_dir), model_max_length=model_max_length)
