"""Reward adapters: losses, training touches only the adapter, save/load round trips, base checks, data sources."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from richfeedback.reward_models import load_reward_model
from richfeedback.reward_models import tiny_checkpoints as tiny
from richfeedback.reward_models.adapters import AdapterError, AdapterSpec, add_adapter, save_adapter
from richfeedback.reward_models.adapters.evaluate import bootstrap_interval, pair_correctness, preference_accuracy
from richfeedback.reward_models.adapters.losses import pairwise_softmax_loss, ranking_loss
from richfeedback.reward_models.adapters.preferences import (PreferencePair, oracle_key, pairs_from_pool,
                                                             read_preference_file, shapesworld_pairs,
                                                             split_by_prompt)

PROMPT = "a red circle on the left"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Tiny official-layout checkpoints: {name: (weights, load options)}."""
    root = tmp_path_factory.mktemp("adapter-bases")
    hps, hps_config = tiny.write_tiny_hps(root / "hps", "v2.1")
    imagereward, imagereward_config = tiny.write_tiny_imagereward(root / "imagereward")
    return {"pickscore": (str(tiny.write_tiny_pickscore(root / "pickscore")), {}),
            "hpsv2.1": (str(hps), {"config": hps_config}),
            "imagereward": (str(imagereward), {"config": imagereward_config}),
            "aesthetic": (str(tiny.write_tiny_aesthetic(root / "aesthetic")), {})}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]


# -- losses -----------------------------------------------------------------------------------------------------------

def test_pairwise_softmax_loss_matches_hand_computed_values_with_ties_as_half():
    a, b = torch.tensor([2.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])
    # -log softmax([2, 1])[0] = log(1 + e^-1) = 0.31326; for B: log(1 + e^1) = 1.31326; a tie: their mean
    per_pair = [math.log1p(math.exp(-1)), math.log1p(math.exp(1)), 0.5 * (math.log1p(math.exp(-1)) +
                                                                           math.log1p(math.exp(1)))]
    assert per_pair[0] == pytest.approx(0.31326, abs=1e-5) and per_pair[2] == pytest.approx(0.81326, abs=1e-5)
    loss = pairwise_softmax_loss(a, b, torch.tensor([1.0, 0.0, 0.5]))
    assert loss.item() == pytest.approx(sum(per_pair) / 3, abs=1e-6)
    # scale multiplies the scores before the softmax: [4, 2] -> log(1 + e^-2) = 0.12693
    assert pairwise_softmax_loss(a[:1], b[:1], torch.tensor([1.0]), scale=2.0).item() == pytest.approx(0.12693,
                                                                                                       abs=1e-5)


def test_ranking_loss_matches_hand_computed_values_and_skips_ties():
    a, b = torch.tensor([2.0, 2.0, 5.0]), torch.tensor([1.0, 1.0, 5.0])
    # -log sigmoid(1) = 0.31326 (A won), -log sigmoid(-1) = 1.31326 (B won); the tie adds nothing
    loss = ranking_loss(a, b, torch.tensor([1.0, 0.0, 0.5]))
    assert loss.item() == pytest.approx((0.31326 + 1.31326) / 2, abs=1e-5)
    scores = torch.tensor([3.0], requires_grad=True)
    all_ties = ranking_loss(scores, torch.tensor([1.0]), torch.tensor([0.5]))
    all_ties.backward()
    assert all_ties.item() == 0.0 and scores.grad is not None


# -- training touches only the adapter --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [("pickscore", "lora"), ("aesthetic", "head"), ("aesthetic", "lora+head"),
                                       ("hpsv2.1", "patch_head"), ("imagereward", "lora+patch_head")])
def test_a_few_training_steps_change_only_adapter_weights(bases, images, name, kind):
    weights, options = bases[name]
    model = load_reward_model(name, weights, **options)
    trainable = set(add_adapter(model, AdapterSpec(kind=kind, r=4)))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # an optimizer over *every* parameter, with weight decay: frozen ones must still not move
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    pixels = torch.stack([model.preprocess(image) for image in images])
    for _ in range(3):
        scores = model([PROMPT] * 4, pixels)
        loss = pairwise_softmax_loss(scores[:2], scores[2:], torch.tensor([1.0, 0.0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    if kind == "lora":
        assert all("lora_" in n for n in trainable)
        assert any("lora_B" in n for n in changed)  # lora_B starts at zero: it moved
    elif kind == "head":
        assert all(n.startswith("mlp.") for n in trainable)
    elif kind == "patch_head":  # the new head only; its zero-initialised last layer moved
        assert all(n.startswith("patch_head.") for n in trainable) and "patch_head.fc2.weight" in changed
    else:  # both move: the LoRA layers and the head
        head = "patch_head." if kind == "lora+patch_head" else "mlp."
        assert all("lora_" in n or n.startswith(head) for n in trainable)
        assert any("lora_B" in n for n in changed) and any(n.startswith(head) for n in changed)


def _lora_wrapped(model) -> set:
    """Names of the modules peft replaced by a LoRA layer."""
    from peft.tuners.lora import LoraLayer

    return {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@pytest.mark.parametrize("name,expected", [
    # every block's attention and MLP linears in both towers, and the patch embedding
    ("pickscore", {"clip.vision_model.embeddings.patch_embedding", "clip.vision_model.encoder.layers.0.mlp.fc1",
                   "clip.vision_model.encoder.layers.1.self_attn.q_proj", "clip.text_model.encoder.layers.0.mlp.fc2",
                   "clip.text_model.encoder.layers.1.self_attn.out_proj"}),
    # open_clip: torch's MultiheadAttention as a whole (peft's own layer for it), the MLP and conv1
    ("hpsv2.1", {"clip.visual.conv1", "clip.visual.transformer.resblocks.0.attn",
                 "clip.visual.transformer.resblocks.0.mlp.c_fc", "clip.transformer.resblocks.0.attn",
                 "clip.transformer.resblocks.0.mlp.c_proj"}),
    ("imagereward", {"blip.visual_encoder.patch_embed.proj", "blip.visual_encoder.blocks.0.attn.qkv",
                     "blip.visual_encoder.blocks.0.mlp.fc2",
                     "blip.text_encoder.encoder.layer.0.crossattention.self.key",
                     "blip.text_encoder.encoder.layer.0.intermediate.dense"}),
    ("aesthetic", {"vision.vision_model.embeddings.patch_embedding", "vision.vision_model.encoder.layers.0.mlp.fc1",
                   "vision.vision_model.encoder.layers.0.self_attn.v_proj"}),
])
def test_default_lora_targets_wrap_every_block_linear_and_the_patch_embedding(bases, name, expected):
    weights, options = bases[name]
    model = load_reward_model(name, weights, **options)
    add_adapter(model, AdapterSpec(kind="lora", r=4))
    wrapped = _lora_wrapped(model)
    assert expected <= wrapped, sorted(expected - wrapped)
    # heads and projections stay as the base: only the backbone is LoRA-adapted
    assert not any(n.startswith("mlp.") or n.endswith("projection") for n in wrapped)


def test_configured_target_modules_are_the_ones_wrapped(bases, tmp_path):
    weights, _ = bases["pickscore"]
    model = load_reward_model("pickscore", weights)
    add_adapter(model, AdapterSpec(kind="lora", r=4, target_modules=r".*vision_model.*\.self_attn\.(q_proj|v_proj)"))
    wrapped = _lora_wrapped(model)
    assert wrapped and all("vision_model" in n and n.endswith(("q_proj", "v_proj")) for n in wrapped)
    save_adapter(model, tmp_path / "adapter")
    loaded = load_reward_model("pickscore", weights, adapter=tmp_path / "adapter")
    assert _lora_wrapped(loaded) == wrapped


# -- save / load ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [("pickscore", "lora"), ("hpsv2.1", "lora"), ("imagereward", "lora"),
                                       ("aesthetic", "head"), ("pickscore", "head"), ("aesthetic", "lora+head"),
                                       ("hpsv2.1", "lora+head"), ("pickscore", "lora+patch_head"),
                                       ("hpsv2.1", "patch_head"), ("imagereward", "lora+patch_head"),
                                       ("aesthetic", "lora+patch_head")])
def test_save_and_load_round_trip_gives_identical_scores(bases, images, tmp_path, name, kind):
    weights, options = bases[name]
    model = load_reward_model(name, weights, **options)
    base_scores = model.score(PROMPT, images)
    trainable = add_adapter(model, AdapterSpec(kind=kind, r=4))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stands in for training: every adapter weight gets a new value
        for n, p in model.named_parameters():
            if n in trainable:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    adapted_scores = model.score(PROMPT, images)
    save_adapter(model, tmp_path / "adapter")

    loaded = load_reward_model(name, weights, adapter=tmp_path / "adapter", **options)
    assert torch.equal(loaded.score(PROMPT, images), adapted_scores)
    assert not torch.allclose(adapted_scores, base_scores)
    assert not any(p.requires_grad for p in loaded.parameters())
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model"] == name and config["kind"] == kind
    assert config["trainable_parameters"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)


def test_loading_an_adapter_on_other_base_weights_fails_clearly(bases, tmp_path):
    weights, _ = bases["pickscore"]
    model = load_reward_model("pickscore", weights)
    add_adapter(model, AdapterSpec(kind="lora", r=4))
    save_adapter(model, tmp_path / "adapter")
    other = tiny.write_tiny_pickscore(tmp_path / "other", seed=1)
    with pytest.raises(AdapterError, match="trained on other pickscore weights"):
        load_reward_model("pickscore", str(other), adapter=tmp_path / "adapter")
    with pytest.raises(AdapterError, match="adapts pickscore, not aesthetic"):
        load_reward_model("aesthetic", bases["aesthetic"][0], adapter=tmp_path / "adapter")
    with pytest.raises(AdapterError, match="is not a reward adapter"):
        load_reward_model("pickscore", weights, adapter=tmp_path)


@pytest.mark.parametrize("kind", ["lora", "lora+patch_head"])
def test_loaded_adapter_runs_in_bf16_and_keeps_gradients_to_the_image(bases, tmp_path, kind):
    weights, _ = bases["pickscore"]
    model = load_reward_model("pickscore", weights)
    add_adapter(model, AdapterSpec(kind=kind, r=4))
    save_adapter(model, tmp_path / "adapter")
    loaded = load_reward_model("pickscore", weights, adapter=tmp_path / "adapter", dtype="bf16")
    assert loaded.dtype == torch.bfloat16
    if kind == "lora+patch_head":  # the head stays in float32, like the families' own score heads
        assert loaded.patch_head.fc1.weight.dtype == torch.float32
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    loaded.differentiable(PROMPT, image).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


# -- the patch head ---------------------------------------------------------------------------------------------------

def test_patch_head_subtracts_a_smooth_maximum_of_per_token_defect_logits():
    from richfeedback.reward_models.adapters.patch_head import PatchHead

    head = PatchHead(width=4, hidden=2)
    tokens = torch.randn(3, 5, 4)
    assert torch.equal(head(tokens), torch.zeros(3))  # a fresh head adds exactly nothing
    with torch.no_grad():
        head.fc2.bias.fill_(1.5)  # every token has defect logit 1.5: logsumexp = 1.5 + log 5, minus log 5
    assert torch.allclose(head(tokens), torch.full((3,), -1.5))
    with torch.no_grad():  # one token far more defective than the rest dominates the term
        head.fc2.bias.zero_()
        head.fc2.weight.fill_(1.0)
        head.fc1.weight.zero_()
        head.fc1.bias.zero_()
        head.fc1.bias[0] = 1.0
    logits = torch.full((1, 5), float(torch.nn.functional.gelu(torch.tensor(1.0))))
    assert torch.allclose(head(tokens[:1]), -(torch.logsumexp(logits, 1) - math.log(5)))


def test_a_patch_head_alone_learns_to_prefer_the_image_without_a_local_defect(bases):
    """On a frozen, untrained backbone: flat images against the same image with a random 8x8 block pasted in."""
    weights, _ = bases["pickscore"]
    model = load_reward_model("pickscore", weights)
    add_adapter(model, AdapterSpec(kind="patch_head", patch_head_hidden=16))
    rng = np.random.default_rng(0)

    def pairs(n):
        clean, damaged = [], []
        for _ in range(n):
            image = np.full((64, 64, 3), rng.integers(40, 200, 3), dtype=np.uint8)
            defect = image.copy()
            y, x = rng.integers(0, 56, 2)
            defect[y:y + 8, x:x + 8] = rng.integers(0, 256, (8, 8, 3))
            clean.append(model.preprocess(image))
            damaged.append(model.preprocess(defect))
        return torch.stack(clean + damaged)

    def accuracy(pixels):
        with torch.no_grad():
            scores = model(["x"] * len(pixels), pixels)
        return (scores[: len(pixels) // 2] > scores[len(pixels) // 2:]).float().mean().item()

    heldout = pairs(64)
    assert accuracy(heldout) < 0.75  # the untrained backbone's own scores: near chance
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(40):
        pixels = pairs(8)
        scores = model(["x"] * 16, pixels)
        loss = pairwise_softmax_loss(scores[:8], scores[8:], torch.ones(8))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert accuracy(heldout) >= 0.9


@pytest.mark.parametrize("name", ["pickscore", "hpsv2.1", "imagereward", "aesthetic"])
def test_a_fresh_patch_head_keeps_the_base_scores_and_a_trained_one_scores_each_image_alone(bases, images, name):
    weights, options = bases[name]
    model = load_reward_model(name, weights, **options)
    base_scores = model.score(PROMPT, images)
    add_adapter(model, AdapterSpec(kind="patch_head"))
    assert torch.allclose(model.score(PROMPT, images), base_scores, atol=1e-6)
    with torch.no_grad():
        model.patch_head.fc2.weight.normal_(generator=torch.Generator().manual_seed(0))
    together = model.score(PROMPT, images)
    assert not torch.allclose(together, base_scores)
    alone = torch.cat([model.score(PROMPT, [image]) for image in images])
    assert torch.allclose(together, alone, atol=1e-5)  # the tokens of one batch never reach another's scores
    image = torch.rand(2, 3, 64, 64, requires_grad=True)
    model.differentiable(PROMPT, image).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


# -- data -------------------------------------------------------------------------------------------------------------

def test_preference_files_of_the_three_formats_give_the_same_labels(tmp_path):
    rows = [{"prompt": PROMPT, "image_a": "x.png", "image_b": "/abs/y.png", "choice": "a", "strength": 2},
            {"prompt": PROMPT, "image_a": "x.png", "image_b": "y.png", "choice": "tie", "strength": 0},
            {"caption": PROMPT, "image_0": "x.png", "image_1": "y.png", "label_0": 0.0, "label_1": 1.0}]
    (tmp_path / "prefs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = read_preference_file(tmp_path / "prefs.jsonl")
    assert [p.label for p in pairs] == [1.0, 0.5, 0.0]
    assert str(pairs[0].image_a) == str(tmp_path / "x.png") and str(pairs[0].image_b) == "/abs/y.png"
    (tmp_path / "hpd.json").write_text(json.dumps([{"prompt": PROMPT, "image_path": ["a.png", "b.png"],
                                                    "human_preference": [0, 1]}]))
    assert read_preference_file(tmp_path / "hpd.json")[0].label == 0.0


def test_pairs_from_a_generate_folder_ranked_by_the_oracle(tmp_path):
    from richfeedback.imaging import save_png
    from richfeedback.shapesworld.misalign import inject_misalignment
    from richfeedback.shapesworld.render import render
    from richfeedback.shapesworld.scene import layout_scene, parse_prompt

    rng = np.random.default_rng(0)
    scene = layout_scene(parse_prompt(PROMPT), rng)
    wrong, _ = inject_misalignment(scene, rng, "wrong_colour")
    rows = []
    for i, s in enumerate([scene, wrong]):
        save_png(render(s), tmp_path / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "prompt": PROMPT, "seed": i})
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = pairs_from_pool(tmp_path, by="oracle")
    assert len(pairs) == 1 and pairs[0].label == 1.0  # the clean render wins
    assert oracle_key(PROMPT, tmp_path / "0.png") > oracle_key(PROMPT, tmp_path / "1.png")


def test_shapesworld_variants_differ_one_thing_at_a_time():
    """Clean, misaligned, damaged, both: "both" is the misaligned scene with the damaged render's artifact draw, so the
    misaligned and the both render miss the same words and differ only by artifacts."""
    from richfeedback.reward_models.adapters.preferences import shapesworld_variants
    from richfeedback.shapesworld.oracle import evaluate

    rng = np.random.default_rng(0)
    same_miss, n = 0, 12
    for _ in range(n):
        prompt, images = shapesworld_variants(rng)
        reports = [evaluate(prompt, image) for image in images]
        missed = [(r.extra_objects,) + tuple(w.word for w in r.words if not w.satisfied) for r in reports]
        damaged = [bool(r.artifact_map.any()) for r in reports]
        assert sorted(damaged) == [False, False, True, True]
        undamaged_misses = sorted((m for m, d in zip(missed, damaged) if not d), key=repr)
        damaged_misses = sorted((m for m, d in zip(missed, damaged) if d), key=repr)
        same_miss += undamaged_misses == damaged_misses  # clean ~ damaged, misaligned ~ both
    assert same_miss >= n - 2  # an artifact may, rarely, also break a word


def test_held_out_split_is_by_prompt():
    pairs = shapesworld_pairs(30, seed=0)
    train, heldout = split_by_prompt(pairs, 0.3)
    assert train and heldout and not ({p.prompt for p in train} & {p.prompt for p in heldout})
    assert len(train) + len(heldout) == len(pairs)


def test_preference_accuracy_counts_ties_in_scores_as_half_and_leaves_tied_labels_out():
    correct = pair_correctness(np.array([2.0, 1.0, 3.0]), np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0]))
    assert correct.tolist() == [1.0, 0.0, 0.5]

    class ByBrightness:
        def score(self, prompts, images):
            return torch.tensor([float(np.mean(i)) for i in images])

    dark, light = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    pairs = [PreferencePair("p1", light, dark, 1.0), PreferencePair("p2", dark, light, 1.0),
             PreferencePair("p3", light, dark, 0.5)]
    result = preference_accuracy(ByBrightness(), pairs, bootstrap=200)
    assert result["accuracy"] == 0.5 and result["pairs"] == 2 and result["ties"] == 1
    assert bootstrap_interval(np.ones(10), [str(i) for i in range(10)]) == (1.0, 1.0)
    # accuracy per label of the pairs, from the same scores; the tied pair's label is left out with it
    by = preference_accuracy(ByBrightness(), pairs, bootstrap=0, by=["x", "y", "z"])["by"]
    assert by == {"x": {"accuracy": 1.0, "pairs": 1}, "y": {"accuracy": 0.0, "pairs": 1}}


# -- the training loop and the command line ---------------------------------------------------------------------------

def _smoke_config(tmp_path, weights, out, **extra):
    lines = [f"output_dir: {out}", f"base: {{name: pickscore, weights: {weights}}}",
             "adapter: {kind: lora, r: 4, alpha: 4.0}", "data: {source: shapesworld, n_prompts: 16}",
             "optim: {lr: 5.0e-3, epochs: 2, batch_size: 8, warmup_steps: 2}", "checkpoint_every_steps: 2",
             *[f"{k}: {v}" for k, v in extra.items()]]
    path = tmp_path / f"{out.name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_trains_an_adapter_that_loads_back_and_resumes_to_the_same_weights(bases, tmp_path):
    from safetensors.torch import load_file

    from richfeedback.cli import main

    weights, _ = bases["pickscore"]
    straight = tmp_path / "straight"
    assert main(["adapter", "train", "--config", str(_smoke_config(tmp_path, weights, straight))]) == 0
    for name in ("best", "final"):
        assert (straight / name / "adapter_model.safetensors").is_file()
    base = json.loads((straight / "base_metrics.json").read_text())
    assert base["pairs"] > 0 and 0.0 <= base["accuracy"] <= 1.0
    load_reward_model("pickscore", weights, adapter=straight / "final")

    cut = tmp_path / "cut"
    config = _smoke_config(tmp_path, weights, cut, stop_after_steps=3)
    assert main(["adapter", "train", "--config", str(config)]) == 0
    assert not (cut / "final").exists() and (cut / "checkpoints" / "step-3").is_dir()
    assert main(["adapter", "train", "--config", str(config), "--resume", "--set", "stop_after_steps=null"]) == 0
    a, b = load_file(str(straight / "final" / "adapter_model.safetensors")), \
        load_file(str(cut / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "adapters").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_adapter_config_in_the_repo_names_a_family_a_kind_and_a_loss(path):
    from richfeedback.reward_models.adapters.losses import check_loss
    from richfeedback.reward_models.adapters.modeling import FAMILIES
    from richfeedback.reward_models.train_adapter import load_config

    cfg = load_config(str(path))
    assert cfg["base"]["name"] in FAMILIES
    AdapterSpec(kind=cfg["adapter"]["kind"], r=cfg["adapter"]["r"], alpha=cfg["adapter"]["alpha"])  # validates kind
    check_loss(cfg["loss"]["type"])


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from richfeedback.cli import main

    (tmp_path / "bad.yaml").write_text("base: {name: pickscore}\ndata: {source: preferences, path: nowhere.jsonl}\n")
    assert main(["adapter", "train", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.jsonl: no such preferences file" in err and "Traceback" not in err


def test_make_pairs_writes_a_preferences_file_that_reads_back(tmp_path, capsys):
    from richfeedback.cli import main

    assert main(["adapter", "make-pairs", "--shapesworld", "3", "--out", str(tmp_path / "pairs")]) == 0
    pairs = read_preference_file(tmp_path / "pairs" / "preferences.jsonl")
    assert len(pairs) == 3 * 6 and all(p.image_a.is_file() for p in pairs)
    assert {p.label for p in pairs} <= {0.0, 0.5, 1.0}
    assert "wrote 18 pairs" in capsys.readouterr().out


def test_score_regression_trains_the_aesthetic_head_on_a_rich_feedback_dataset(bases, tmp_path):
    from richfeedback.reward_models.train_adapter import load_config, train
    from richfeedback.shapesworld.dataset import make_dataset

    make_dataset(tmp_path / "data", 24, 1, 1, size=64, progress=False)
    weights, _ = bases["aesthetic"]
    cfg = load_config(None, ["base.name=aesthetic", f"base.weights={weights}", "adapter.kind=head",
                             "data.source=scores", f"data.path={tmp_path / 'data'}", "data.heldout_fraction=0.3",
                             "optim.epochs=2", "optim.batch_size=4", f"output_dir={tmp_path / 'run'}"])
    train(cfg, cpu=True)
    info = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert info["kind"] == "head" and info["training"]["loss"] == "mse"
    assert "spearman" in json.loads((tmp_path / "run" / "base_metrics.json").read_text())
    load_reward_model("aesthetic", weights, adapter=tmp_path / "run" / "final")


def test_batches_grouped_by_prompt_encode_each_image_once_and_give_the_same_pairwise_loss(bases):
    from richfeedback.reward_models.adapters.losses import pairwise_loss
    from richfeedback.reward_models.train_adapter import (AdapterDataset, PromptGroupDataset, collate,
                                                          collate_groups)

    pairs = shapesworld_pairs(3, seed=0)
    weights, _ = bases["pickscore"]
    model = load_reward_model("pickscore", weights)
    groups = PromptGroupDataset(pairs, model.transform)
    prompts, pixels, ends, labels = collate_groups([groups[i] for i in range(len(groups))])
    assert len(prompts) == len({(p.prompt, id(x)) for p in pairs for x in (p.image_a, p.image_b)}) == 12
    assert ends.shape == (len(pairs), 2) and labels.tolist() == [p.label for p in pairs]
    scores = model(prompts, pixels)
    grouped = pairwise_loss("pairwise_softmax", scores[ends[:, 0]], scores[ends[:, 1]], labels)
    pair_prompts, (a, b), pair_labels = collate([AdapterDataset(pairs, model.transform)[i] for i in range(len(pairs))])
    direct = pairwise_loss("pairwise_softmax", model(pair_prompts, a), model(pair_prompts, b), pair_labels)
    assert grouped.item() == pytest.approx(direct.item(), rel=1e-5)


def test_cli_trains_a_lora_plus_head_adapter_on_prompt_groups(bases, tmp_path):
    from richfeedback.cli import main

    weights, _ = bases["aesthetic"]
    out = tmp_path / "grouped"
    config = tmp_path / "grouped.yaml"
    config.write_text("\n".join([
        f"output_dir: {out}", f"base: {{name: aesthetic, weights: {weights}}}",
        "adapter: {kind: lora+head, r: 4, alpha: 4.0}",
        "data: {source: shapesworld, n_prompts: 16, group_by_prompt: true}",
        "optim: {lr: 5.0e-3, epochs: 2, batch_size: 4, warmup_steps: 2}"]) + "\n")
    assert main(["adapter", "train", "--config", str(config)]) == 0
    info = json.loads((out / "final" / "adapter_config.json").read_text())
    assert info["kind"] == "lora+head" and info["head_parameters"] and info["lora"]["r"] == 4
    assert info["training"]["step"] >= 2  # two epochs of at least one batch of 4 prompts
    loaded = load_reward_model("aesthetic", weights, adapter=out / "final")
    assert _lora_wrapped(loaded) and loaded.adapter_info["kind"] == "lora+head"


def test_cli_trains_a_lora_plus_patch_head_adapter_that_resumes_to_the_same_weights(bases, tmp_path):
    from safetensors.torch import load_file

    from richfeedback.cli import main

    weights, _ = bases["pickscore"]
    config = tmp_path / "patch.yaml"
    config.write_text("\n".join([
        f"base: {{name: pickscore, weights: {weights}}}",
        "adapter: {kind: lora+patch_head, r: 4, alpha: 4.0, patch_head_hidden: 16}",
        "data: {source: shapesworld, n_prompts: 16, group_by_prompt: true}",
        "optim: {lr: 5.0e-3, epochs: 2, batch_size: 4, warmup_steps: 2}", "checkpoint_every_steps: 1"]) + "\n")
    train = ["adapter", "train", "--config", str(config), "--set"]
    assert main(train + [f"output_dir={tmp_path / 'straight'}"]) == 0
    assert main(train + [f"output_dir={tmp_path / 'cut'}", "--set", "stop_after_steps=2"]) == 0
    assert not (tmp_path / "cut" / "final").exists()
    assert main(train + [f"output_dir={tmp_path / 'cut'}", "--resume"]) == 0
    info = json.loads((tmp_path / "straight" / "final" / "adapter_config.json").read_text())
    assert info["kind"] == "lora+patch_head" and info["patch_head"]["hidden"] == 16 and info["lora"]["r"] == 4
    a = load_file(str(tmp_path / "straight" / "final" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final" / "adapter_model.safetensors"))
    assert any(k.startswith("patch_head.") for k in a) and any("lora_" in k for k in a)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    loaded = load_reward_model("pickscore", weights, adapter=tmp_path / "cut" / "final")
    assert loaded.adapter_info["kind"] == "lora+patch_head" and loaded.patch_head.hidden == 16


def test_auto_loss_scale_puts_each_family_at_its_backbones_temperature(bases):
    from richfeedback.reward_models.train_adapter import auto_loss_scale

    weights, _ = bases["pickscore"]
    assert auto_loss_scale(load_reward_model("pickscore", weights)) == 1.0  # logit_scale * cos already
    clipscore = load_reward_model("clipscore", weights)
    with torch.no_grad():
        clipscore.clip.logit_scale.fill_(math.log(100.0))  # OpenAI CLIP's, at the cap: 2.5 * cos -> 100 * cos
    assert auto_loss_scale(clipscore) == pytest.approx(40.0)
    with torch.no_grad():
        clipscore.clip.logit_scale.fill_(math.log(15.0))  # a briefly trained small CLIP
    assert auto_loss_scale(clipscore) == pytest.approx(6.0)
    weights, options = bases["hpsv2.1"]
    hps = load_reward_model("hpsv2.1", weights, **options)
    with torch.no_grad():
        hps.clip.logit_scale.fill_(math.log(100.0))
    assert auto_loss_scale(hps) == pytest.approx(1.0)  # the released HPS: 100 * cos is its own logit
    with torch.no_grad():
        hps.clip.logit_scale.fill_(math.log(20.0))
    assert auto_loss_scale(hps) == pytest.approx(0.2)
    weights, options = bases["imagereward"]
    assert auto_loss_scale(load_reward_model("imagereward", weights, **options)) == 1.0
