"""RAHF (Rich Automatic Human Feedback, Liang et al., CVPR 2024) in one file.

Image patches from a ViT are projected to the T5 width and concatenated with the prompt's T5 token embeddings; one
T5 encoder runs over both. The fused *image* tokens, as a grid, feed the heatmap heads (implausibility,
misalignment) and the score heads (plausibility, alignment, aesthetics, overall); the fused *text* tokens feed the T5
decoder, which writes the prompt back with misaligned words marked `word_0`.

Module and parameter names follow the public PyTorch reimplementation (youweiliang/RichHF) so its checkpoint loads
with every key accounted for (see `checkpoint.py`). Where we differ, on purpose:
- the encoder gets an attention mask (image tokens always attended, text padding never), so an image's outputs do
  not depend on the other prompts in its batch; the reference passes none;
- tokenization happens in `RAHFProcessor`, outside `forward`, and the augmented-prompt variant encodes its six task
  prompts in one batched pass instead of six sequential ones (same result);
- the heads take their widths from the config, so the same classes build the tiny, ShapesWorld and large models;
- decoding can lower the logit of the misaligned-word mark by `config.marker_logit_bias`, a decision threshold chosen
  on a dev split; it is 0 (the reference's plain greedy decoding) unless a model's config sets it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel, T5ForConditionalGeneration, ViTModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration import HEATMAP_NAMES, SCORE_NAMES, RAHFConfig

# The augmented-prompt variant's task prompts, in the order of `task_input_ids`.
TASKS: tuple[tuple[str, str], ...] = tuple([("SCORE", n) for n in SCORE_NAMES] + [("HEATMAP", n) for n in HEATMAP_NAMES])


def task_prompt(kind: str, name: str, prompt: str) -> str:
    return f"<output> {kind}: {name} </output> {prompt}"


class ChannelRMSNorm(nn.Module):
    """T5-style RMS norm over the channels of a feature map: x * rsqrt(mean_c(x^2) + eps) * scale (no mean, no bias)."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps) * self.scale


class HeatmapPredictor(nn.Module):
    """Token grid (B, D, g, g) -> heatmap (B, g * 2**stages, same) in [0, 1]: two convs, then per stage a transposed
    conv that doubles the resolution followed by a residual conv block."""

    def __init__(self, in_channels: int, conv_channels: list[int], up_channels: list[int]):
        super().__init__()
        c0, c1 = conv_channels
        self.conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding="same"), nn.ReLU(), ChannelRMSNorm(c0),
            nn.Conv2d(c0, c1, 3, padding="same"), nn.ReLU(), ChannelRMSNorm(c1),
        )
        self.deconv_layers = nn.ModuleList()
        self.conv_layers2 = nn.ModuleList()
        previous = c1
        for out in up_channels:
            self.deconv_layers.append(nn.Sequential(
                nn.ConvTranspose2d(previous, out, 3, stride=2, padding=1, output_padding=1), ChannelRMSNorm(out), nn.ReLU()))
            self.conv_layers2.append(nn.Sequential(
                nn.Conv2d(out, out, 3, padding="same"), ChannelRMSNorm(out), nn.ReLU(),
                nn.Conv2d(out, out, 3, padding="same"), ChannelRMSNorm(out)))
            previous = out
        # A bare conv with the ReLU in forward, as the public checkpoint stores it (`last_conv1.weight`).
        self.last_conv1 = nn.Conv2d(previous, previous, 3, padding="same")
        self.last_conv2 = nn.Conv2d(previous, 1, 3, padding="same")
        self._register_load_state_dict_pre_hook(_rename_legacy_last_conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_layers(x)
        for deconv, block in zip(self.deconv_layers, self.conv_layers2):
            x = deconv(x)
            x = F.relu(block(x) + x)
        return torch.sigmoid(self.last_conv2(F.relu(self.last_conv1(x)))).squeeze(1)


# richfeedback up to 0.1 wrapped the heatmap head's `last_conv1` in a Sequential with its ReLU, so checkpoints it wrote
# (folders and training states) name it `last_conv1.0.*`; the public checkpoint, and this module since, `last_conv1.*`.
_HEAD_LAST_CONV1 = r"^(.*heatmap_predictor\.(?:[a-z_]+\.)?last_conv1)\."
LEGACY_KEY_MAPPING = {_HEAD_LAST_CONV1 + r"0\.": r"\1."}  # old name -> current, for from_pretrained
_CURRENT_LAST_CONV1 = re.compile(_HEAD_LAST_CONV1 + r"(?=weight$|bias$)")


def legacy_parameter_name(name: str) -> str:
    """A parameter's name as richfeedback 0.1 wrote it (`...last_conv1.weight` -> `...last_conv1.0.weight`); other
    names unchanged. Weight fingerprints hash these, so records made before the rename still match."""
    return _CURRENT_LAST_CONV1.sub(r"\1.0.", name)


def _rename_legacy_last_conv1(state_dict, prefix, *args, **kwargs):
    for name in ("weight", "bias"):
        old = f"{prefix}last_conv1.0.{name}"
        if old in state_dict:
            state_dict[f"{prefix}last_conv1.{name}"] = state_dict.pop(old)


class ScorePredictor(nn.Module):
    """Token grid (B, D, g, g) -> score (B,) in [0, 1]: conv blocks narrowing the channels, then an MLP."""

    def __init__(self, in_channels: int, conv_channels: list[int], num_patches: int, hidden_sizes: list[int]):
        super().__init__()
        layers, previous = [], in_channels
        for out in conv_channels:
            layers += [nn.Conv2d(previous, out, 3, padding=1), ChannelRMSNorm(out), nn.ReLU()]
            previous = out
        self.conv_layers = nn.Sequential(*layers)
        linear, width = [], previous * num_patches
        for hidden in hidden_sizes:
            linear += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        linear += [nn.Linear(width, 1), nn.Sigmoid()]
        self.linear_layers = nn.Sequential(*linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_layers(self.conv_layers(x).flatten(1)).flatten()


@dataclasses.dataclass
class RAHFOutput:
    heatmaps: dict[str, torch.Tensor]  # name -> (B, H, W) in [0, 1]
    scores: dict[str, torch.Tensor]  # name -> (B,) in [0, 1]
    seq_loss: Optional[torch.Tensor] = None  # teacher-forced cross-entropy of the misaligned-word sequence
    text_hidden_states: Optional[torch.Tensor] = None  # fused text tokens, what the decoder reads
    text_attention_mask: Optional[torch.Tensor] = None
    seq_logits: Optional[torch.Tensor] = None  # (B, L, vocab) decoder logits behind seq_loss (with labels only)
    image_hidden_states: Optional[torch.Tensor] = None  # (B, g*g, d_model) fused patch tokens of the prompt's pass


class RAHFPreTrainedModel(PreTrainedModel):
    config_class = RAHFConfig
    base_model_prefix = "rahf"
    main_input_name = "pixel_values"

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' `from_pretrained`, which also reads folders written before `last_conv1` took the public
        checkpoint's name (`LEGACY_KEY_MAPPING`)."""
        kwargs.setdefault("key_mapping", LEGACY_KEY_MAPPING)
        return super().from_pretrained(*args, **kwargs)

    def _init_weights(self, module):
        # ViT and T5 initialise their own modules; the heads keep PyTorch's default initialisation as the reference.
        pass


class RAHFModel(RAHFPreTrainedModel):
    def __init__(self, config: RAHFConfig):
        super().__init__(config)
        # The pooler is unused (and frozen in training) but part of the public checkpoint's layout.
        self.vit = ViTModel(config.vit_config(), add_pooling_layer=True)
        self.t5 = T5ForConditionalGeneration(config.t5_config())
        d_model, grid = config.t5["d_model"], config.grid_size
        self.visual_token_projection = nn.Linear(config.vit["hidden_size"], d_model)
        if len(config.heatmap_up_channels) != config.num_upsampling_stages:
            raise ValueError(f"heatmap_up_channels needs {config.num_upsampling_stages} stages to undo patch size "
                             f"{config.vit['patch_size']}, got {len(config.heatmap_up_channels)}")

        def heatmap_head():
            return HeatmapPredictor(d_model, config.heatmap_conv_channels, config.heatmap_up_channels)

        def score_head():
            return ScorePredictor(d_model, config.score_conv_channels, grid * grid, config.score_hidden_sizes)

        if config.variant == "multi_head":
            self.heatmap_predictor = nn.ModuleDict({name: heatmap_head() for name in HEATMAP_NAMES})
            self.score_predictor = nn.ModuleDict({name: score_head() for name in SCORE_NAMES})
        else:
            self.heatmap_predictor = heatmap_head()
            self.score_predictor = score_head()
        self.post_init()

    # -- encoder -------------------------------------------------------------------------------------------------

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 1 + g*g, d_model): ViT tokens (CLS first) projected to the T5 width."""
        return self.visual_token_projection(self.vit(pixel_values=pixel_values).last_hidden_state)

    def fuse(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Run the T5 encoder over [image tokens; text tokens]; returns (hidden states, their attention mask)."""
        text = self.t5.get_input_embeddings()(input_ids)
        mask = torch.cat([attention_mask.new_ones(image_tokens.shape[:2]), attention_mask], dim=1)
        hidden = self.t5.encoder(inputs_embeds=torch.cat([image_tokens, text], dim=1), attention_mask=mask)
        return hidden.last_hidden_state, mask

    def _grid(self, hidden: torch.Tensor) -> torch.Tensor:
        g = self.config.grid_size
        patches = hidden[:, 1 : 1 + g * g]  # drop CLS
        return patches.transpose(1, 2).reshape(hidden.shape[0], -1, g, g)

    # -- forward -------------------------------------------------------------------------------------------------

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: Optional[torch.Tensor] = None, task_input_ids: Optional[torch.Tensor] = None,
                task_attention_mask: Optional[torch.Tensor] = None,
                outputs: Optional[Sequence[str]] = None) -> RAHFOutput:
        """`labels`: target token ids of the marked prompt, -100 where padded (then `seq_loss` is returned).
        `task_input_ids` / `task_attention_mask` (B, 6, L): the augmented-prompt variant's task prompts, in `TASKS`
        order (`RAHFProcessor` makes them).
        `outputs`: the heatmaps and scores to compute, by name (`HEATMAP_NAMES`, `SCORE_NAMES`); None: all. A reward
        that needs one score runs one head (and, for the augmented-prompt variant, one task pass), not six."""
        wanted = list(HEATMAP_NAMES + SCORE_NAMES) if outputs is None else list(outputs)
        unknown = [name for name in wanted if name not in HEATMAP_NAMES + SCORE_NAMES]
        if unknown:
            raise ValueError(f"RAHF has no output {unknown}; its outputs are {HEATMAP_NAMES + SCORE_NAMES}")
        vis = self.image_tokens(pixel_values)
        hidden, mask = self.fuse(vis, input_ids, attention_mask)
        n_vis = vis.shape[1]
        heatmaps, scores = {}, {}
        if self.config.variant == "multi_head":
            grid = self._grid(hidden)
            heatmaps = {name: head(grid) for name, head in self.heatmap_predictor.items() if name in wanted}
            scores = {name: head(grid) for name, head in self.score_predictor.items() if name in wanted}
        else:
            if task_input_ids is None or task_attention_mask is None:
                raise ValueError("the augmented-prompt variant needs task_input_ids and task_attention_mask "
                                 "(RAHFProcessor makes them)")
            tasks = [i for i, (_, name) in enumerate(TASKS) if name in wanted]
            if tasks:
                task_input_ids, task_attention_mask = task_input_ids[:, tasks], task_attention_mask[:, tasks]
                b, t, length = task_input_ids.shape
                task_hidden, _ = self.fuse(vis.repeat_interleave(t, dim=0), task_input_ids.reshape(b * t, length),
                                           task_attention_mask.reshape(b * t, length))
                grids = self._grid(task_hidden).reshape(b, t, -1, self.config.grid_size, self.config.grid_size)
                for j, i in enumerate(tasks):
                    kind, name = TASKS[i]
                    if kind == "SCORE":
                        scores[name] = self.score_predictor(grids[:, j])
                    else:
                        heatmaps[name] = self.heatmap_predictor(grids[:, j])
        text_hidden, text_mask = hidden[:, n_vis:], mask[:, n_vis:]
        seq_loss = seq_logits = None
        if labels is not None:
            decoded = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=text_hidden),
                              attention_mask=text_mask, labels=labels)
            seq_loss, seq_logits = decoded.loss, decoded.logits
        g = self.config.grid_size
        return RAHFOutput(heatmaps, scores, seq_loss, text_hidden, text_mask, seq_logits, hidden[:, 1 : 1 + g * g])

    @torch.no_grad()
    def generate_marked_prompt(self, output: RAHFOutput, max_new_tokens: Optional[int] = None,
                               marker_logit_bias: Optional[float] = None) -> torch.Tensor:
        """Greedy decoding of the prompt with misaligned words marked, from a forward pass's text tokens.

        `marker_logit_bias` (default: the config's) is subtracted from the logit of the config's `marker_token_id`
        at every step: above 0 a word is marked only when the model is surer, below 0 more readily."""
        bias = self.config.marker_logit_bias if marker_logit_bias is None else float(marker_logit_bias)
        extra = {}
        if bias:
            if self.config.marker_token_id is None:
                raise ValueError("a marker logit bias needs config.marker_token_id (the token that starts a '_0' "
                                 "mark; evaluate.choose_marker_bias sets both)")
            extra["sequence_bias"] = {(int(self.config.marker_token_id),): -bias}
        return self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=output.text_hidden_states),
                                attention_mask=output.text_attention_mask,
                                max_new_tokens=max_new_tokens or self.config.max_new_tokens, do_sample=False, **extra)


def grow_encoder(model: RAHFModel, num_layers: int) -> RAHFModel:
    """`model` with its T5 encoder deepened to `num_layers` blocks, in place; the new blocks start as the identity.

    Each new block is appended after the trained ones with its attention output (`o`) and feed-forward output (`wo`)
    projections at zero, so every residual branch adds nothing and the grown model computes exactly what it did
    (tested); training then gives the fusion of image and text tokens more depth to bind words to objects. Relative
    position bias stays in block 0, which the new blocks reuse as T5's own blocks 1..n do.
    """
    from transformers.models.t5.modeling_t5 import T5Block

    encoder = model.t5.encoder
    current = len(encoder.block)
    if num_layers < current:
        raise ValueError(f"the encoder has {current} layers already; growing can only add layers (asked {num_layers})")
    for index in range(current, num_layers):
        block = T5Block(encoder.config, has_relative_attention_bias=False, layer_idx=index)
        block.to(device=encoder.final_layer_norm.weight.device, dtype=encoder.final_layer_norm.weight.dtype)
        nn.init.zeros_(block.layer[0].SelfAttention.o.weight)
        nn.init.zeros_(block.layer[-1].DenseReluDense.wo.weight)
        encoder.block.append(block)
    encoder.config.num_layers = num_layers
    model.t5.config.num_layers = num_layers
    model.config.t5 = {**model.config.t5, "num_layers": num_layers,
                       "num_decoder_layers": model.t5.config.num_decoder_layers}
    return model


def sincos_2d_table(grid_size: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(grid_size * grid_size, dim) fixed 2-D sine-cosine position table, row-major as ViT numbers its patches.

    The MAE / MoCo-v3 table: the first half of the channels encodes the patch row, the second half its column, each as
    sines and cosines of the position at frequencies spaced geometrically from 1 down to 1/`base` (MAE: 10000)."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine table needs a width divisible by 4, got {dim}")
    omega = 1.0 / base ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid_size, dtype=torch.float64),
                                torch.arange(grid_size, dtype=torch.float64), indexing="ij")

    def encode(positions):
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def add_sincos_position_embeddings(model: RAHFModel, scale: float) -> RAHFModel:
    """Add `scale` x a 2-D sine-cosine table to the ViT's learned patch position embeddings, in place (CLS untouched).

    For ViTs trained from scratch on small data: there the heatmap and score heads read each patch's place from the
    grid layout, so only the sequence loss asks the position embeddings to carry where a patch is, and they stay near
    their random start (measured on the embedded model: norm 0.3 beside patch embeddings of norm 11, neighbouring
    patches no more alike than distant ones). The table gives each patch token a smooth code of its row and column;
    it stays a learned parameter with the same name and shape, so checkpoints keep the public layout. Pretrained ViTs
    (the public checkpoint's) do not need it. On the embedded model one epoch with it did not, by itself, teach the
    decoder position words (README, RAHF: `configs/rahf/experiments/`).

    The frequencies go down to 1/grid side rather than MAE's 1/10000: on an 8x8 grid MAE's table leaves three
    quarters of its channels nearly constant (a shared offset, no position); this one turns every channel across it.
    """
    embeddings = model.vit.embeddings.position_embeddings  # (1, 1 + g*g, hidden)
    grid = model.config.grid_size
    table = sincos_2d_table(grid, embeddings.shape[-1], base=grid)
    with torch.no_grad():
        embeddings[0, 1:] += scale * table.to(embeddings.device, embeddings.dtype)
    return model


def with_variant(model: RAHFModel, variant: str) -> RAHFModel:
    """A copy of a multi-head `model` as the augmented-prompt variant (or the same model if it already is one).

    Every shared weight (ViT, projection, T5 encoder and decoder) is copied; the augmented variant's one heatmap head
    and one score head start from the multi-head implausibility and overall heads. Used to start training the
    augmented-prompt variant from a trained multi-head model instead of from scratch.
    """
    if model.config.variant == variant:
        return model
    if (model.config.variant, variant) != ("multi_head", "augmented_prompt"):
        raise ValueError(f"cannot turn a {model.config.variant} RAHF into {variant}: only multi_head -> "
                         "augmented_prompt is defined (the multi-head model has a head for every output)")
    config = RAHFConfig.from_dict({**model.config.to_dict(), "variant": variant})
    new = RAHFModel(config)
    source = model.state_dict()
    mapped = {}
    for key in new.state_dict():
        if key.startswith("heatmap_predictor."):
            mapped[key] = source["heatmap_predictor.implausibility." + key[len("heatmap_predictor."):]]
        elif key.startswith("score_predictor."):
            mapped[key] = source["score_predictor.overall." + key[len("score_predictor."):]]
        else:
            mapped[key] = source[key]
    new.load_state_dict(mapped, strict=True)
    return new
