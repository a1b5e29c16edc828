"""A patch head: a small trainable head over a reward model's final image tokens, added to its score.

A reward model's score reads one pooled image embedding (CLIP's class token, BLIP's text [CLS] after cross-attention).
A local defect, a smear or a stray blob in a few patches of the image, is averaged into that embedding with
everything else, and a frozen backbone that was never told such defects are bad may not keep it there at all. The
patch head looks at every token instead:

    defect_i = MLP(LayerNorm(token_i))                       one logit per image token
    score'   = score - (logsumexp_i defect_i - log n_tokens)  a smooth maximum: one bad patch is enough

Its last layer starts at zero, so a fresh head leaves every score exactly as the base gives it. The head is prompt-
free (defects do not depend on the prompt) and is trained with the family's own pairwise loss, next to LoRA
("lora+patch_head") or alone on the frozen backbone ("patch_head").

Wiring: two forward hooks, so that no family's `forward` changes. One on the module that returns the image tower's
final tokens (`FAMILIES[name].token_module`) keeps them; one on the reward model adds the head's term to the scores
the model returns. Both fire on every call of the model (`score`, `differentiable`, training), and the tokens of one
call are used by that call only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODULE_NAME = "patch_head"  # the head's attribute on the reward model, and its parameters' prefix


class PatchHead(nn.Module):
    """(B, L, D) image tokens -> (B,) score term: minus a smooth maximum of per-token defect logits."""

    def __init__(self, width: int, hidden: int = 64):
        super().__init__()
        self.width, self.hidden = width, hidden
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.zeros_(self.fc2.weight)  # a fresh head adds exactly 0: the adapter starts at its base
        nn.init.zeros_(self.fc2.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(nn.functional.gelu(self.fc1(self.norm(tokens.float())))).squeeze(-1)  # (B, L)
        return -(torch.logsumexp(logits, dim=1) - math.log(logits.shape[1]))


def _tokens_of(output) -> torch.Tensor:
    """The (B, L, D) tokens in a module's output: a tensor, a transformers ModelOutput or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output[0]


def token_width(model, token_module: str) -> int:
    """The width of the tokens `token_module` returns, from one forward pass of a blank image."""
    seen = {}

    def keep(module, args, output):  # returns None: the output goes on unchanged
        seen["tokens"] = _tokens_of(output)

    handle = model.get_submodule(token_module).register_forward_hook(keep)
    try:
        size = model.transform.size
        with torch.no_grad():
            model(["a"], torch.zeros(1, 3, size, size, device=model.device, dtype=model.dtype))
    finally:
        handle.remove()
    if "tokens" not in seen or seen["tokens"].ndim != 3:
        raise ValueError(f"{model.name}: {token_module} did not return (batch, tokens, width) image tokens")
    return int(seen["tokens"].shape[-1])


def attach_patch_head(model, token_module: str, hidden: int = 64) -> PatchHead:
    """Add a fresh PatchHead to `model` (as `model.patch_head`) and hook it into its forward; returns the head."""
    if hasattr(model, MODULE_NAME):
        raise ValueError(f"{model.name} already has a patch head")
    head = PatchHead(token_width(model, token_module), hidden).to(model.device)
    model.add_module(MODULE_NAME, head)
    # a small score head: kept in float32 whatever dtype the model is cast to (`base.prepare`), like the family's own
    model.fp32_modules = (*model.fp32_modules, MODULE_NAME)
    kept: dict[str, torch.Tensor] = {}

    def keep_tokens(module, args, output):
        kept["tokens"] = _tokens_of(output)

    def add_term(module, args, scores):
        tokens = kept.pop("tokens", None)
        if tokens is None or tokens.shape[0] != scores.shape[0]:
            raise RuntimeError(f"{model.name}'s patch head saw no image tokens for this batch from {token_module}")
        return scores + head(tokens).to(scores.dtype)

    model.get_submodule(token_module).register_forward_hook(keep_tokens)
    model.register_forward_hook(add_term)
    return head
