"""The CLIP tokenizer built offline from open_clip's vocabulary file."""

import open_clip

from richfeedback.tokenizers import CLIP_VOCAB_SIZE, build_clip_tokenizer

PROMPTS = [
    "a red circle on the left and two blue squares",
    "a green square on the top, a red circle in the center and a small blue triangle on the bottom",
    "Hello, World!! Mars!! café naïve 🚀",
    "A photo of an astronaut riding a horse on the moon, 4k, trending on artstation",
    "   spaces   and\ttabs  ",
    "x" * 300,  # truncated
]


def test_token_ids_equal_open_clip_ids(tmp_path):
    tokenizer = build_clip_tokenizer(tmp_path, model_max_length=77)
    reference = open_clip.get_tokenizer("ViT-B-32")
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    for prompt in PROMPTS:
        ours = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        theirs = reference([prompt])[0].tolist()
        n = sum(1 for t in theirs if t != 0)  # open_clip pads with 0, we pad with <|endoftext|> as SD 1.x does
        assert ours[:n] == theirs[:n], prompt
        assert all(t == tokenizer.eos_token_id for t in ours[n:])


def test_tokenizer_reloads_from_its_folder(tmp_path):
    from transformers import CLIPTokenizer

    first = build_clip_tokenizer(tmp_path, model_max_length=32)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again.model_max_length == 32
    assert again(PROMPTS[0]).input_ids == first(PROMPTS[0]).input_ids
