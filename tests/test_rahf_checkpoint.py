"""Loading the public RichHF checkpoint layout (transformers 4.32 names, 842 keys) strictly."""

import pytest
import torch

from richfeedback.reward_models.rahf.checkpoint import (CheckpointMismatchError, legacy_state_dict,
                                                        load_public_checkpoint, to_installed_names,
                                                        _uses_new_vit_names)
from richfeedback.reward_models.rahf.configuration import RAHFConfig
from richfeedback.reward_models.rahf.modeling import RAHFModel


def public_multi_head_keys(vit_layers=24, t5_layers=12, up_stages=4, score_convs=6):
    """The key names of the released multi-head checkpoint, written out from the reference's layout (not from our
    model), so the test checks our mapping against the file's real names."""
    keys = ["vit.embeddings.cls_token", "vit.embeddings.position_embeddings",
            "vit.embeddings.patch_embeddings.projection.weight", "vit.embeddings.patch_embeddings.projection.bias",
            "vit.layernorm.weight", "vit.layernorm.bias", "vit.pooler.dense.weight", "vit.pooler.dense.bias"]
    for i in range(vit_layers):
        for m in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense", "intermediate.dense", "output.dense", "layernorm_before", "layernorm_after"):
            keys += [f"vit.encoder.layer.{i}.{m}.weight", f"vit.encoder.layer.{i}.{m}.bias"]
    keys += ["t5.shared.weight", "t5.encoder.embed_tokens.weight", "t5.decoder.embed_tokens.weight", "t5.lm_head.weight",
             "t5.encoder.final_layer_norm.weight", "t5.decoder.final_layer_norm.weight",
             "t5.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "t5.decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    for i in range(t5_layers):
        e, d = f"t5.encoder.block.{i}.layer", f"t5.decoder.block.{i}.layer"
        keys += [f"{e}.0.SelfAttention.{p}.weight" for p in "qkvo"] + [f"{e}.0.layer_norm.weight",
                 f"{e}.1.DenseReluDense.wi.weight", f"{e}.1.DenseReluDense.wo.weight", f"{e}.1.layer_norm.weight"]
        keys += [f"{d}.0.SelfAttention.{p}.weight" for p in "qkvo"] + [f"{d}.0.layer_norm.weight"]
        keys += [f"{d}.1.EncDecAttention.{p}.weight" for p in "qkvo"] + [f"{d}.1.layer_norm.weight",
                 f"{d}.2.DenseReluDense.wi.weight", f"{d}.2.DenseReluDense.wo.weight", f"{d}.2.layer_norm.weight"]
    keys += ["visual_token_projection.weight", "visual_token_projection.bias"]
    for name in ("implausibility", "misalignment"):
        h = f"heatmap_predictor.{name}"
        keys += [f"{h}.conv_layers.{j}.{p}" for j, p in ((0, "weight"), (0, "bias"), (2, "scale"), (3, "weight"),
                                                        (3, "bias"), (5, "scale"))]
        for s in range(up_stages):
            keys += [f"{h}.deconv_layers.{s}.0.weight", f"{h}.deconv_layers.{s}.0.bias", f"{h}.deconv_layers.{s}.1.scale"]
            keys += [f"{h}.conv_layers2.{s}.{j}.{p}" for j, p in ((0, "weight"), (0, "bias"), (1, "scale"),
                                                                 (3, "weight"), (3, "bias"), (4, "scale"))]
        keys += [f"{h}.last_conv1.weight", f"{h}.last_conv1.bias", f"{h}.last_conv2.weight", f"{h}.last_conv2.bias"]
    for name in ("plausibility", "alignment", "aesthetics", "overall"):
        s = f"score_predictor.{name}"
        for j in range(score_convs):
            keys += [f"{s}.conv_layers.{3 * j}.weight", f"{s}.conv_layers.{3 * j}.bias", f"{s}.conv_layers.{3 * j + 1}.scale"]
        keys += [f"{s}.linear_layers.{j}.{p}" for j in (0, 2, 4) for p in ("weight", "bias")]
    return keys


def test_public_key_names_map_exactly_onto_the_large_model():
    expected = public_multi_head_keys()
    assert len(expected) == len(set(expected)) == 842
    with torch.device("meta"):
        model = RAHFModel(RAHFConfig.from_size("large"))
    ours = set(model.state_dict())
    new_names = _uses_new_vit_names(ours)
    assert {to_installed_names(k, new_names) for k in expected} == ours


@pytest.fixture
def tiny_public_file(tmp_path):
    torch.manual_seed(0)
    model = RAHFModel(RAHFConfig.from_size("tiny")).eval()
    path = tmp_path / "rahf_tiny.pt"
    torch.save(legacy_state_dict(model), path)
    return model, path


def test_tiny_checkpoint_in_public_layout_loads_strictly_and_reproduces_outputs(tiny_public_file):
    source, path = tiny_public_file
    state = torch.load(path, weights_only=True)
    assert set(public_multi_head_keys(vit_layers=1, t5_layers=1, up_stages=3, score_convs=2)) == set(state)
    loaded = load_public_checkpoint(path, size="tiny")
    assert loaded.t5.lm_head.weight is loaded.t5.shared.weight  # the tie the file's four aliases stand for
    x, ids = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randint(3, 100, (2, 6))
    a, b = source(x, ids, torch.ones_like(ids), labels=ids), loaded(x, ids, torch.ones_like(ids), labels=ids)
    assert torch.equal(a.heatmaps["implausibility"], b.heatmaps["implausibility"])
    assert torch.equal(a.scores["overall"], b.scores["overall"]) and torch.equal(a.seq_loss, b.seq_loss)


def test_wrapped_and_ddp_prefixed_files_load(tiny_public_file, tmp_path):
    _, path = tiny_public_file
    state = torch.load(path, weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    load_public_checkpoint(tmp_path / "wrapped.pt", size="tiny")


def test_missing_and_unexpected_keys_are_listed(tiny_public_file, tmp_path):
    _, path = tiny_public_file
    state = torch.load(path, weights_only=True)
    state.pop("visual_token_projection.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing visual_token_projection.bias; unexpected extra.weight"):
        load_public_checkpoint(tmp_path / "bad.pt", size="tiny")


def test_wrong_size_is_named_in_the_error(tiny_public_file):
    _, path = tiny_public_file
    with pytest.raises(CheckpointMismatchError, match="does not match RAHF size 'shapes'"):
        load_public_checkpoint(path, size="shapes")


class Payload:
    """Stands for any pickled object: loading it would run code from the file."""


def test_files_with_pickled_objects_are_refused(tmp_path):
    torch.save({"weights": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointMismatchError, match="never unpickle"):
        load_public_checkpoint(tmp_path / "evil.pt", size="tiny")


def test_missing_file_says_where_the_checkpoint_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_public_checkpoint(tmp_path / "nope.pt")
