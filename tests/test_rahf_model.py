"""RAHF's architecture: both variants, the large layout, and outputs that do not depend on the batch."""

import pytest
import torch

from richfeedback.reward_models.rahf.configuration import HEATMAP_NAMES, SCORE_NAMES, RAHFConfig
from richfeedback.reward_models.rahf.modeling import RAHFModel
from richfeedback.reward_models.rahf.processing import RAHFProcessor, load_shapesworld_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_shapesworld_tokenizer()


def make(variant, tokenizer, seed=0):
    torch.manual_seed(seed)
    config = RAHFConfig.from_size("tiny", variant=variant)
    return RAHFModel(config).eval(), RAHFProcessor(tokenizer, config)


@pytest.mark.parametrize("variant", ["multi_head", "augmented_prompt"])
def test_outputs_have_image_sized_heatmaps_and_unit_interval_scores(variant, tokenizer):
    model, processor = make(variant, tokenizer)
    images = torch.rand(3, 3, 48, 48)  # resized to the model's 32x32 by the processor
    prompts = ["a red circle", "two blue squares and a green triangle", "a small yellow square on the left"]
    labeled = ["a red_0 circle", "two blue squares and a green triangle", "a small yellow_0 square on the left"]
    output = model(**processor(images, prompts, labeled))
    assert set(output.heatmaps) == set(HEATMAP_NAMES) and set(output.scores) == set(SCORE_NAMES)
    for heatmap in output.heatmaps.values():
        assert heatmap.shape == (3, 32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    for score in output.scores.values():
        assert score.shape == (3,) and ((0 <= score) & (score <= 1)).all()
    assert torch.isfinite(output.seq_loss)
    assert model.generate_marked_prompt(output, max_new_tokens=6).shape[0] == 3


@pytest.mark.parametrize("variant", ["multi_head", "augmented_prompt"])
def test_an_images_outputs_do_not_depend_on_its_batch(variant, tokenizer):
    model, processor = make(variant, tokenizer)
    images = torch.rand(2, 3, 32, 32)
    alone = model(**processor(images[:1], ["a red circle"]))
    # The other prompt is much longer, so the first one is padded in the batch.
    together = model(**processor(images, ["a red circle", "a green square on the top, a red circle in the center "
                                                          "and a small blue triangle on the bottom"]))
    for name in SCORE_NAMES:
        torch.testing.assert_close(together.scores[name][:1], alone.scores[name], atol=1e-5, rtol=1e-5)
    for name in HEATMAP_NAMES:
        torch.testing.assert_close(together.heatmaps[name][:1], alone.heatmaps[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["multi_head", "augmented_prompt"])
def test_asking_for_some_outputs_computes_only_those_with_the_same_values(variant, tokenizer):
    model, processor = make(variant, tokenizer)
    inputs = processor(torch.rand(2, 3, 32, 32), ["a red circle", "two blue squares"])
    full = model(**inputs)
    some = model(**inputs, outputs=("aesthetics", "misalignment"))
    assert set(some.scores) == {"aesthetics"} and set(some.heatmaps) == {"misalignment"}
    torch.testing.assert_close(some.scores["aesthetics"], full.scores["aesthetics"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(some.heatmaps["misalignment"], full.heatmaps["misalignment"], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="no output"):
        model(**inputs, outputs=("beauty",))


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, tokenizer):
    model, processor = make("multi_head", tokenizer)
    model.save_pretrained(tmp_path)
    again = RAHFModel.from_pretrained(tmp_path).eval()
    inputs = processor(torch.rand(2, 3, 32, 32), ["a red circle", "two blue squares"])
    a, b = model(**inputs), again(**inputs)
    for name in SCORE_NAMES:
        assert torch.equal(a.scores[name], b.scores[name])
    assert (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("variant, keys, params", [("multi_head", 842, 642_612_710),
                                                   ("augmented_prompt", 724, 573_074_938)])
def test_large_size_matches_the_public_layout(variant, keys, params):
    with torch.device("meta"):
        model = RAHFModel(RAHFConfig.from_size("large", variant=variant))
    assert len(model.state_dict()) == keys
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.config.grid_size == 24 and model.config.num_upsampling_stages == 4


def test_unknown_size_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"available: \['large', 'shapes', 'tiny'\]"):
        RAHFConfig.from_size("huge")


def test_shapesworld_tokenizer_round_trips_marked_prompts_and_matches_the_embedded_models():
    from transformers import AutoTokenizer

    from richfeedback.reward_models.rahf.predict import embedded_rahf_path
    from richfeedback.reward_models.rahf.processing import build_shapesworld_tokenizer, load_shapesworld_tokenizer

    shipped = load_shapesworld_tokenizer()
    embedded = AutoTokenizer.from_pretrained(embedded_rahf_path() / "tokenizer")
    fresh = build_shapesworld_tokenizer()
    for text in ("a red_0 circle on the left and two blue squares", "three small yellow_0 triangles"):
        assert shipped(text).input_ids == embedded(text).input_ids
        for tokenizer in (shipped, fresh):
            assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_a_multi_head_model_starts_the_augmented_variant_with_its_shared_weights_and_heads(tiny_rahf_dir):
    from richfeedback.reward_models.rahf.modeling import RAHFModel, with_variant

    multi = RAHFModel.from_pretrained(tiny_rahf_dir)
    augmented = with_variant(multi, "augmented_prompt")
    assert augmented.config.variant == "augmented_prompt" and multi.config.variant == "multi_head"
    a, m = augmented.state_dict(), multi.state_dict()
    assert all(torch.equal(a[k], m[k]) for k in a if not k.startswith(("heatmap_predictor.", "score_predictor.")))
    assert all(torch.equal(a[k], m[k.replace("heatmap_predictor.", "heatmap_predictor.implausibility.")])
               for k in a if k.startswith("heatmap_predictor."))
    assert all(torch.equal(a[k], m[k.replace("score_predictor.", "score_predictor.overall.")])
               for k in a if k.startswith("score_predictor."))
    assert with_variant(augmented, "augmented_prompt") is augmented
    with pytest.raises(ValueError, match="only multi_head -> augmented_prompt"):
        with_variant(augmented, "multi_head")


def test_growing_the_encoder_keeps_the_outputs_and_the_grown_model_round_trips(tmp_path, tokenizer):
    from richfeedback.reward_models.rahf.modeling import grow_encoder

    model, processor = make("multi_head", tokenizer, seed=1)
    inputs = processor(torch.rand(2, 3, 32, 32), ["a red circle on the left", "two blue squares"],
                       ["a red circle on the left_0", "two blue squares"])
    with torch.no_grad():
        before = model(**inputs)
        layers = len(model.t5.encoder.block)
        grow_encoder(model, layers + 2)
        after = model(**inputs)
    assert len(model.t5.encoder.block) == layers + 2 and model.config.t5["num_layers"] == layers + 2
    assert model.t5.config.num_decoder_layers == len(model.t5.decoder.block)  # the decoder is not grown
    for name in SCORE_NAMES:
        torch.testing.assert_close(after.scores[name], before.scores[name], atol=1e-6, rtol=1e-6)
    for name in HEATMAP_NAMES:
        torch.testing.assert_close(after.heatmaps[name], before.heatmaps[name], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(after.seq_loss, before.seq_loss, atol=1e-6, rtol=1e-6)
    # the new blocks are trainable: one step on the sequence loss moves their zeroed output projections
    model.train()
    model(**inputs).seq_loss.backward()
    assert model.t5.encoder.block[-1].layer[0].SelfAttention.o.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    again = RAHFModel.from_pretrained(tmp_path).eval()
    assert len(again.t5.encoder.block) == layers + 2
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).seq_loss, model(**inputs).seq_loss)
    with pytest.raises(ValueError, match="can only add"):
        grow_encoder(again, 1)


def test_a_marker_logit_bias_decides_how_readily_words_are_marked(tokenizer):
    from richfeedback.reward_models.rahf.evaluate import marker_start_token_id

    model, processor = make("multi_head", tokenizer, seed=2)
    inputs = processor(torch.rand(2, 3, 32, 32), ["a red circle on the left", "two blue squares"])
    with torch.no_grad():
        output = model(**inputs)
        marker = marker_start_token_id(tokenizer)
        assert tokenizer.convert_ids_to_tokens(marker) == "_"
        with pytest.raises(ValueError, match="marker_token_id"):
            model.generate_marked_prompt(output, max_new_tokens=6, marker_logit_bias=1.0)
        model.config.marker_token_id = marker
        never = model.generate_marked_prompt(output, max_new_tokens=6, marker_logit_bias=1e4)
        always = model.generate_marked_prompt(output, max_new_tokens=6, marker_logit_bias=-1e4)
        plain = model.generate_marked_prompt(output, max_new_tokens=6)
    assert not (never == marker).any() and (always[:, 1:] == marker).all()
    assert torch.equal(plain, model.generate_marked_prompt(output, max_new_tokens=6, marker_logit_bias=0.0))
    model.config.marker_logit_bias = 1e4  # the config's bias is the default
    with torch.no_grad():
        assert torch.equal(model.generate_marked_prompt(output, max_new_tokens=6), never)


def test_sincos_table_codes_row_and_column_as_hand_computed():
    from richfeedback.reward_models.rahf.modeling import sincos_2d_table

    # width 4: one frequency (1) per axis, so a patch at (row r, column c) gets [sin r, cos r, sin c, cos c]
    table = sincos_2d_table(2, 4)
    s, c = torch.sin(torch.tensor(1.0)).item(), torch.cos(torch.tensor(1.0)).item()
    expected = torch.tensor([[0, 1, 0, 1], [0, 1, s, c], [s, c, 0, 1], [s, c, s, c]])
    torch.testing.assert_close(table, expected)
    # width 8 at base 4: frequencies 1 and 1/4**(1/2) = 1/2
    row0_col1 = sincos_2d_table(3, 8, base=4.0)[1]
    torch.testing.assert_close(row0_col1[:4], torch.tensor([0, 0, 1, 1.0]))
    half = torch.tensor([1.0, 0.5])
    torch.testing.assert_close(row0_col1[4:], torch.cat([half.sin(), half.cos()]))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_table(2, 6)


def test_sincos_positions_are_added_to_the_patch_embeddings_only_and_keep_the_layout(tokenizer):
    from richfeedback.reward_models.rahf.modeling import add_sincos_position_embeddings, sincos_2d_table

    model, _ = make("multi_head", tokenizer)
    keys = {k: v.shape for k, v in model.state_dict().items()}
    before = model.vit.embeddings.position_embeddings.detach().clone()
    add_sincos_position_embeddings(model, 0.5)
    after = model.vit.embeddings.position_embeddings.detach()
    grid, width = model.config.grid_size, before.shape[-1]
    torch.testing.assert_close(after[0, 0], before[0, 0])  # CLS keeps its embedding
    torch.testing.assert_close(after[0, 1:] - before[0, 1:], 0.5 * sincos_2d_table(grid, width, base=grid))
    assert {k: v.shape for k, v in model.state_dict().items()} == keys  # same names and shapes: the public layout
    assert model.vit.embeddings.position_embeddings.requires_grad


def test_the_training_config_adds_sincos_positions_once_when_it_builds_the_model(tmp_path, tokenizer):
    from richfeedback.reward_models.rahf.modeling import sincos_2d_table
    from richfeedback.reward_models.rahf.train import build_model, load_config

    model, _ = make("multi_head", tokenizer, seed=3)
    model.save_pretrained(tmp_path / "init")
    tokenizer.save_pretrained(tmp_path / "init" / "tokenizer")
    cfg = load_config(None, ["model.size=tiny", f"model.init={tmp_path / 'init'}"])
    plain, _ = build_model(cfg)
    cfg = load_config(None, ["model.size=tiny", f"model.init={tmp_path / 'init'}", "model.add_sincos_positions=0.25"])
    built, _ = build_model(cfg)
    grid = model.config.grid_size
    added = built.vit.embeddings.position_embeddings - plain.vit.embeddings.position_embeddings
    torch.testing.assert_close(added[0, 1:].detach(), 0.25 * sincos_2d_table(grid, added.shape[-1], base=grid))


def test_folders_and_states_with_the_old_last_conv1_names_still_load(tmp_path, tokenizer):
    """Before it took the public checkpoint's name (`last_conv1.weight`), the heatmap head's last conv was saved as
    `last_conv1.0.weight`; such folders (from_pretrained) and training states (load_state_dict) load the same."""
    from safetensors.torch import load_file, save_file

    model, processor = make("multi_head", tokenizer)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert "heatmap_predictor.implausibility.last_conv1.weight" in state
    old = {k.replace("last_conv1.", "last_conv1.0."): v for k, v in state.items()}
    assert sum("last_conv1.0." in k for k in old) == 4  # weight and bias of both heatmap heads
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    inputs = processor(torch.rand(2, 3, 32, 32), ["a red circle", "two blue squares"])
    expected = model(**inputs).heatmaps
    loaded = RAHFModel.from_pretrained(tmp_path).eval()
    fresh, _ = make("multi_head", tokenizer)
    old_state = {k.replace("last_conv1.", "last_conv1.0."): v for k, v in model.state_dict().items()}
    fresh.load_state_dict(old_state, strict=True)  # what accelerate's load_state does with an old training state
    for name in ("implausibility", "misalignment"):
        assert torch.equal(loaded(**inputs).heatmaps[name], expected[name])
        assert torch.equal(fresh.eval()(**inputs).heatmaps[name], expected[name])
