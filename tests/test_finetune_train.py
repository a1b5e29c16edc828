"""LoRA training: resume restores the LoRA (same next-step loss), two CPU processes train, the result loads in plain
diffusers and changes its images, and the four-stage `richfeedback finetune` runs from one YAML file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from richfeedback.finetune.train import LORA_WEIGHTS, batch_indices, load_config, main, train
from richfeedback.imaging import save_png
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 clean ShapesWorld renders in the imagefolder layout `richfeedback pool filter` writes."""
    out = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        scene = sample_scene(rng)
        save_png(render(scene, 64), out / f"{i:03d}.png")
        rows.append({"file_name": f"{i:03d}.png", "text": scene.prompt.text})
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def config(dataset, out, **overrides):
    cfg = load_config(None, [f"data.path={dataset}", f"output_dir={out}", "optim.batch_size=4", "optim.max_steps=6",
                             "optim.lr=5e-3", "checkpoint_every_steps=100", "validation.every_steps=100"])

    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (Path(out) / "train_log.jsonl").read_text().splitlines())}


def test_batches_depend_only_on_the_seed_and_the_step():
    a = batch_indices(5, 16, 4, 0, 1, seed=0)
    assert torch.equal(a, batch_indices(5, 16, 4, 0, 1, seed=0))
    epoch = torch.cat([batch_indices(k, 16, 4, 0, 1, seed=0) for k in range(4)])
    assert sorted(epoch.tolist()) == list(range(16))  # one epoch sees every example once
    two = torch.cat([batch_indices(0, 16, 4, r, 2, seed=0) for r in range(2)])
    assert len(set(two.tolist())) == 8  # two processes take different examples


def test_resume_after_an_interruption_gives_the_same_next_step_loss(dataset, tmp_path):
    train(config(dataset, tmp_path / "straight"))
    train(config(dataset, tmp_path / "cut", stop_after_steps=3))
    checkpoint = tmp_path / "cut" / "checkpoints" / "step-3"
    assert (checkpoint / LORA_WEIGHTS).exists() and (checkpoint / "optimizer.bin").exists()
    assert not (checkpoint / "model.safetensors").exists()  # the frozen model is not copied into checkpoints
    train(config(dataset, tmp_path / "cut"), resume=True)
    straight, cut = losses(tmp_path / "straight"), losses(tmp_path / "cut")
    assert sorted(cut) == sorted(straight) == list(range(1, 7))
    for step in range(1, 7):
        assert cut[step] == pytest.approx(straight[step], rel=1e-4), (step, cut, straight)
    # A resume that lost the LoRA weights (diffusers' script before PR #12690) restarts from the initialisation:
    fresh = config(dataset, tmp_path / "fresh", stop_after_steps=3)
    train(fresh)
    (tmp_path / "fresh" / "checkpoints" / "step-3" / LORA_WEIGHTS).unlink()
    from safetensors.torch import load_file, save_file

    init = {k: torch.zeros_like(v) for k, v in load_file(checkpoint / LORA_WEIGHTS).items()}
    save_file(init, tmp_path / "fresh" / "checkpoints" / "step-3" / LORA_WEIGHTS)
    train(config(dataset, tmp_path / "fresh"), resume=True)
    assert losses(tmp_path / "fresh")[4] != pytest.approx(straight[4], rel=1e-3)


def test_the_lora_file_loads_in_a_fresh_diffusers_pipeline_and_changes_its_output(dataset, tmp_path):
    from diffusers import StableDiffusionPipeline

    from richfeedback.generation import embedded_generator_path, generate_images

    out = train(config(dataset, tmp_path / "lora", optim={**config(dataset, tmp_path)["optim"], "lr": 3e-2}))
    assert (out / LORA_WEIGHTS).exists()
    info = json.loads((out / "richfeedback_lora.json").read_text())
    assert info["rank"] == 4 and info["base_model"] == "embedded"
    pipe = StableDiffusionPipeline.from_pretrained(embedded_generator_path(), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    sampling = {"num_inference_steps": 4, "guidance_scale": 4.0, "height": 64, "width": 64}
    before = generate_images(pipe, ["a red circle"], [0], **sampling)[0]
    pipe.load_lora_weights(str(out))
    after = generate_images(pipe, ["a red circle"], [0], **sampling)[0]
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 3.0
    pipe.unload_lora_weights()
    again = generate_images(pipe, ["a red circle"], [0], **sampling)[0]
    assert np.abs(before.astype(int) - again.astype(int)).max() <= 1


@pytest.mark.parametrize("objective", ["denoising", "dpo"])
def test_two_processes_train_on_cpu(dataset, pairs_dataset, tmp_path, objective):
    """Both objectives under DDP (DPO's reference passes go through the unwrapped UNet and the base text encoder)."""
    config_file, data = (("embedded-dpo.yaml", pairs_dataset) if objective == "dpo" else ("embedded.yaml", dataset))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "richfeedback.finetune.train", "--config", str(ROOT / "configs/finetune" / config_file), "--cpu",
           "--set", f"data.path={data}", "--set", f"output_dir={tmp_path}", "--set", "optim.batch_size=4",
           "--set", "optim.max_steps=2", "--set", "validation.every_steps=100"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 2 and summary["objective"] == objective
    assert list(losses(tmp_path)) == [1, 2]
    if objective == "dpo":
        assert losses(tmp_path)[1] == pytest.approx(np.log(2), abs=1e-6)
    assert (tmp_path / LORA_WEIGHTS).exists()


def test_a_share_of_the_examples_trains_with_the_empty_prompt(dataset, tmp_path, monkeypatch):
    import richfeedback.finetune.train as module
    from richfeedback.errors import UsageError
    from richfeedback.generation import load_pipeline

    conditionings, captions = [], []
    denoising_loss, encode_text = module.denoising_loss, module.encode_text

    def record_conditioning(unet, scheduler, latents, conditioning, *args, **kwargs):
        conditionings.append(conditioning["encoder_hidden_states"].detach().clone())
        return denoising_loss(unet, scheduler, latents, conditioning, *args, **kwargs)

    def record_captions(pipe, batch_captions, device):
        captions.append(list(batch_captions))
        return encode_text(pipe, batch_captions, device)

    monkeypatch.setattr(module, "denoising_loss", record_conditioning)
    monkeypatch.setattr(module, "encode_text", record_captions)
    train(config(dataset, tmp_path / "cached", proportion_empty_prompts=0.5))
    empty = encode_text(load_pipeline("embedded"), [""], "cpu")["encoder_hidden_states"][0]
    rows = torch.cat(conditionings)  # 6 steps x 4 examples, from the cached text embeddings
    dropped = [torch.allclose(row, empty, atol=1e-6) for row in rows]
    assert len(rows) == 24 and 6 <= sum(dropped) <= 18, sum(dropped)
    # trained text encoder: nothing cached, the dropped captions are encoded as ""
    captions.clear()
    cfg = config(dataset, tmp_path / "encoder", proportion_empty_prompts=0.5)
    cfg["lora"]["train_text_encoder"] = True
    train(cfg)
    batches = [c for c in captions if len(c) == 4]
    assert len(batches) == 6 and 6 <= sum(c == "" for b in batches for c in b) <= 18
    with pytest.raises(UsageError, match=r"proportion_empty_prompts must be in \[0, 1\)"):
        train(config(dataset, tmp_path / "bad", proportion_empty_prompts=1.0))


def test_bad_dataset_is_one_line_naming_the_command_that_makes_one(tmp_path, capsys):
    assert main(["--config", str(ROOT / "configs/finetune/embedded.yaml"), "--set", f"data.path={tmp_path}",
                 "--set", f"output_dir={tmp_path / 'o'}"]) == 2
    assert "richfeedback pool filter" in capsys.readouterr().err


def test_too_small_a_dataset_for_one_batch_says_so(dataset, tmp_path):
    with pytest.raises(Exception, match="fewer than one batch"):
        train(config(dataset, tmp_path, optim={**load_config(None)["optim"], "batch_size": 64}))


def test_the_four_stages_run_from_one_yaml_and_a_rerun_skips_what_is_done(tmp_path, capsys):
    from richfeedback.cli import main as cli

    cfg = {
        "output_dir": str(tmp_path / "run"),
        "pool": {"prompts": {"shapesworld": {"n": 4, "seed": 3, "split": "train"}}, "n": 4, "shard_size": 2,
                 "sampling": {"num_inference_steps": 2}},
        "score": {"models": ["oracle"]},
        "filter": {"policy": "topk", "score": "oracle:quality", "k": 2},
        "train": {"optim": {"batch_size": 4, "max_steps": 2}, "validation": {"prompts": ["a red circle"],
                                                                              "seeds": [0], "every_steps": 2,
                                                                              "num_inference_steps": 2}},
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli(["finetune", "--config", str(path)]) == 0
    run = tmp_path / "run"
    assert len(list((run / "pool").glob("shard-*/*.png"))) == 16
    assert len((run / "data" / "metadata.jsonl").read_text().splitlines()) == 8
    assert (run / "lora" / LORA_WEIGHTS).exists() and (run / "lora" / "validation" / "step-000002.png").exists()
    stamp = (run / "lora" / LORA_WEIGHTS).stat().st_mtime_ns
    assert cli(["finetune", "--config", str(path)]) == 0  # everything done: nothing redone
    assert (run / "lora" / LORA_WEIGHTS).stat().st_mtime_ns == stamp
    # the same file configures the training stage alone (what `accelerate launch -m ...train` reads)
    train_cfg = load_config(str(path))
    assert train_cfg["data"]["path"] == str(run / "data") and train_cfg["output_dir"] == str(run / "lora")
    # finished stages made from other inputs are refused, not reused: scores from other weights under a filtered
    # dataset, a LoRA trained on a dataset that has changed since
    weights_record = run / "pool" / "scores" / "rahf_alignment.weights.json"
    weights_record.write_text(json.dumps({"spec": "rahf:alignment", "fingerprint": "other"}) + "\n")
    assert cli(["finetune", "--config", str(path)]) == 2
    assert "filtered from scores that other weights wrote (rahf_alignment changed since)" in capsys.readouterr().err
    weights_record.unlink()
    metadata = run / "data" / "metadata.jsonl"
    metadata.write_text("".join(metadata.read_text().splitlines(keepends=True)[:-1]))
    assert cli(["finetune", "--config", str(path)]) == 2
    assert f"{run / 'lora'} was trained on other data" in capsys.readouterr().err


def test_sdxl_unet_and_both_text_encoders_train_and_load_back_in_diffusers(dataset, tiny_sdxl_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from richfeedback.generation import generate_images

    cfg = load_config(None, [f"data.path={dataset}", f"output_dir={tmp_path}", f"model.pretrained={tiny_sdxl_dir}",
                             "optim.batch_size=4", "optim.max_steps=3", "optim.lr=5e-2", "lora.init=false",
                             "lora.train_text_encoder=true", "checkpoint_every_steps=2", "stop_after_steps=2"])
    train(cfg)
    cfg["stop_after_steps"] = None
    train(cfg, resume=True)  # the resume path loads the UNet's and both text encoders' LoRA back
    assert list(losses(tmp_path)) == [1, 2, 3]
    from safetensors.torch import load_file

    keys = load_file(tmp_path / LORA_WEIGHTS).keys()
    assert {k.split(".")[0] for k in keys} == {"unet", "text_encoder", "text_encoder_2"}
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    sampling = {"num_inference_steps": 2, "height": 64, "width": 64}
    before = generate_images(pipe, ["a red circle"], [0], **sampling)[0]
    pipe.load_lora_weights(str(tmp_path))
    after = generate_images(pipe, ["a red circle"], [0], **sampling)[0]
    assert np.abs(before.astype(int) - after.astype(int)).max() > 0


def test_regularisation_renders_are_appended_to_the_training_data(dataset, tmp_path):
    from richfeedback.cli import main as cli

    assert cli(["shapesworld", "renders", "--n", "8", "--seed", "3", "--out", str(tmp_path / "renders")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "renders" / "metadata.jsonl").read_text().splitlines()]
    from richfeedback.shapesworld.scene import is_heldout_prompt

    assert len(rows) == 8 and not any(is_heldout_prompt(r["text"]) for r in rows)
    cfg = config(dataset, tmp_path / "out")
    cfg["data"]["extra_paths"] = [str(tmp_path / "renders")]
    cfg["optim"]["max_steps"] = 1
    train(cfg)
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["num_examples"] == 16 + 8


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "finetune").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_finetune_config_reads_and_its_filter_policy_is_valid(path):
    from richfeedback.finetune.filtering import FilterPolicy
    from richfeedback.finetune.loop import is_loop_config, load_loop_config

    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)  # refuses unknown training keys
    assert cfg["optim"]["max_steps"] >= 1 and cfg["lora"]["rank"] >= 1
    if is_loop_config(raw):
        loop = load_loop_config(path)
        policy = FilterPolicy(**loop["filter"])
        assert policy.policy in ("threshold", "topk", "align_sd", "pairs")
        assert (policy.policy == "pairs") == (cfg["loss"]["objective"] == "dpo"), "DPO trains on pairs, only DPO does"
        assert loop["score"]["models"], "a loop config scores its pool with at least one model"


def test_a_dataset_with_align_sd_negatives_gives_the_lora_its_negative_prompt(dataset, tmp_path):
    """`pool filter --negatives` then training with a config that does not name the negative prompt (the README's
    steps): the prefix comes from the dataset's filter report, so the LoRA records it and validation samples with it."""
    import shutil

    from richfeedback.finetune.filtering import REPORT
    from richfeedback.finetune.train import LORA_INFO

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (data / REPORT).write_text(json.dumps({"policy": {"negative_prefix": "Weird image. "}, "kept_negative": 2}))
    cfg = config(data, tmp_path / "out")
    cfg["optim"]["max_steps"] = 1
    train(cfg)
    assert json.loads((tmp_path / "out" / LORA_INFO).read_text())["negative_prompt"] == "Weird image."
    cfg = config(dataset, tmp_path / "plain")  # no filter report: no negative prompt
    cfg["optim"]["max_steps"] = 1
    train(cfg)
    assert json.loads((tmp_path / "plain" / LORA_INFO).read_text())["negative_prompt"] is None


def test_a_lora_with_alpha_other_than_rank_loads_in_diffusers_at_its_own_scale(dataset, tmp_path):
    """diffusers takes alpha = rank when a LoRA file carries no adapter metadata; ours carries it."""
    from diffusers import StableDiffusionPipeline

    from richfeedback.generation import embedded_generator_path

    cfg = config(dataset, tmp_path / "lora")
    cfg["lora"] = {**cfg["lora"], "rank": 4, "alpha": 16, "train_text_encoder": True}
    cfg["optim"]["max_steps"] = 1
    out = train(cfg)
    pipe = StableDiffusionPipeline.from_pretrained(embedded_generator_path(), local_files_only=True)
    pipe.load_lora_weights(str(out))
    for model in (pipe.unet, pipe.text_encoder):
        scalings = {v for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)
                    for v in m.scaling.values()}
        assert scalings == {4.0}, scalings  # alpha / rank


# --- Diffusion-DPO ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pairs_dataset(tmp_path_factory):
    """16 pairs in the layout `pool filter --policy pairs` writes: a prompt's clean render (chosen) and the render of
    another scene (rejected)."""
    out = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(1)
    rows = []
    for i in range(16):
        scene, other = sample_scene(rng), sample_scene(rng)
        save_png(render(scene, 64), out / f"{i:03d}-w.png")
        save_png(render(other, 64), out / f"{i:03d}-l.png")
        rows.append({"file_name": f"{i:03d}-w.png", "rejected_file_name": f"{i:03d}-l.png", "text": scene.prompt.text,
                     "type": "pair"})
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def dpo_config(pairs_dataset, out, **overrides):
    cfg = config(pairs_dataset, out, **overrides)
    cfg["loss"] = {**cfg["loss"], "objective": "dpo", "dpo_beta": 500.0}
    return cfg


def test_dpo_loss_is_diffusion_dpo_with_the_base_unet_as_reference_and_shared_noise():
    """The loss against a hand computation: same noise and timestep for the chosen and rejected latents, the
    reference is the UNet with its LoRA switched off, and -log sigmoid(-beta/2 ((w - l) - (ref_w - ref_l)))."""
    import contextlib

    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    import richfeedback.finetune.train as module
    from richfeedback.generation import load_pipeline

    pipe = load_pipeline("embedded")
    cfg = load_config(None, ["loss.objective=dpo", "loss.dpo_beta=2000"])
    module.add_lora(pipe, cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a LoRA that changes the model, so the policy and reference differ
    unet, scheduler = pipe.unet, DDPMScheduler.from_config(pipe.scheduler.config)
    assert scheduler.config.prediction_type == "v_prediction"

    @contextlib.contextmanager
    def base():
        unet.disable_adapters()
        try:
            yield unet
        finally:
            unet.enable_adapters()

    size = unet.config.sample_size
    chosen, rejected = torch.randn(3, 4, size, size), torch.randn(3, 4, size, size)
    conditioning = module.encode_text(pipe, ["a red circle", "two blue squares", "a green triangle"], "cpu")
    loss, stats = module.dpo_loss(unet, base, scheduler, chosen, rejected, conditioning, conditioning,
                                  torch.Generator().manual_seed(5), cfg)

    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(chosen.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (3,), generator=generator)
    with torch.no_grad():
        def errors(latents, lora: bool):
            if lora:
                unet.enable_adapters()
            else:
                unet.disable_adapters()
            pred = unet(scheduler.add_noise(latents, noise, timesteps), timesteps,
                        conditioning["encoder_hidden_states"]).sample
            unet.enable_adapters()
            target = scheduler.get_velocity(latents, noise, timesteps)  # the embedded model predicts v
            return (pred - target).pow(2).mean(dim=(1, 2, 3))

        w, l = errors(chosen, True), errors(rejected, True)
        ref_w, ref_l = errors(chosen, False), errors(rejected, False)
    inside = -0.5 * 2000 * ((w - l) - (ref_w - ref_l))
    assert (ref_w - w).abs().max() > 1e-4  # the LoRA matters, so a wrong reference would show
    # (batches of 6 against 3 round differently; beta magnifies that to ~1e-4)
    assert loss.item() == pytest.approx(-F.logsigmoid(inside).mean().item(), rel=1e-3)
    assert stats["implicit_accuracy"].item() == pytest.approx(((inside > 0).float() + 0.5 * (inside == 0).float())
                                                              .mean().item())
    assert stats["denoising_loss"].item() == pytest.approx(torch.cat([w, l]).mean().item(), rel=1e-4)
    # dpo_sft_weight adds that multiple of the chosen images' denoising loss
    with_sft = load_config(None, ["loss.objective=dpo", "loss.dpo_beta=2000", "loss.dpo_sft_weight=0.5"])
    loss_sft, _ = module.dpo_loss(unet, base, scheduler, chosen, rejected, conditioning, conditioning,
                                  torch.Generator().manual_seed(5), with_sft)
    assert loss_sft.item() - loss.item() == pytest.approx(0.5 * w.mean().item(), rel=1e-3)


def test_dpo_training_starts_at_log_two_learns_the_pairs_and_resumes_exactly(pairs_dataset, tmp_path):
    """At step 1 the LoRA is zero, so the model is its reference and the loss is exactly log 2; training lowers it;
    a run cut at step 3 and resumed gives the uninterrupted losses (the rejected latents' noise included)."""
    high_lr = {**config(pairs_dataset, tmp_path)["optim"], "lr": 5e-3, "max_steps": 8}
    train(dpo_config(pairs_dataset, tmp_path / "straight", optim=high_lr))
    train(dpo_config(pairs_dataset, tmp_path / "cut", optim=high_lr, stop_after_steps=3))
    train(dpo_config(pairs_dataset, tmp_path / "cut", optim=high_lr), resume=True)
    straight, cut = losses(tmp_path / "straight"), losses(tmp_path / "cut")
    assert straight[1] == pytest.approx(np.log(2), abs=1e-6)
    for step in range(1, 9):
        assert cut[step] == pytest.approx(straight[step], rel=1e-4), (step, cut, straight)
    assert np.mean([straight[s] for s in range(2, 9)]) < np.log(2) - 0.1, straight
    log = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert {"implicit_accuracy", "denoising_loss"} <= set(log[0])
    assert log[0]["implicit_accuracy"] == 0.5  # the model is its reference: every pair a tie, counted half
    info = json.loads((tmp_path / "straight" / "richfeedback_lora.json").read_text())
    summary = json.loads((tmp_path / "straight" / "train_summary.json").read_text())
    assert info["objective"] == summary["objective"] == "dpo" and summary["num_examples"] == 16


def test_dpo_reference_reads_the_base_text_encoder_when_its_lora_is_trained(pairs_dataset, tmp_path, monkeypatch):
    import contextlib

    import richfeedback.finetune.train as module
    from richfeedback.generation import load_pipeline

    # base_text_encoders switches the encoder's LoRA off: its conditioning is the untouched encoder's
    pipe, plain = load_pipeline("embedded"), load_pipeline("embedded")
    cfg = load_config(None, ["lora.train_text_encoder=true"])
    module.add_lora(pipe, cfg)
    with torch.no_grad():
        for name, p in pipe.text_encoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    captions = ["a red circle", "two blue squares"]
    expected = module.encode_text(plain, captions, "cpu")["encoder_hidden_states"]
    with torch.no_grad():
        with module.base_text_encoders(pipe):
            reference = module.encode_text(pipe, captions, "cpu")["encoder_hidden_states"]
        trained = module.encode_text(pipe, captions, "cpu")["encoder_hidden_states"]
    assert torch.allclose(reference, expected, atol=1e-6)
    assert not torch.allclose(trained, expected, atol=1e-3)  # and on again afterwards
    # the training loop takes that path
    cfg = dpo_config(pairs_dataset, tmp_path / "te")
    cfg["lora"] = {**cfg["lora"], "train_text_encoder": True}
    cfg["optim"] = {**cfg["optim"], "lr": 2e-2, "max_steps": 3}
    calls = []
    original = module.base_text_encoders

    @contextlib.contextmanager
    def counting(pipe):
        calls.append(1)
        with original(pipe):
            yield

    monkeypatch.setattr(module, "base_text_encoders", counting)
    train(cfg)
    trained_losses = losses(tmp_path / "te")
    assert len(calls) == 3 and trained_losses[1] == pytest.approx(np.log(2), abs=1e-6)


def test_dpo_refuses_data_without_pairs_and_settings_it_cannot_use(dataset, pairs_dataset, tmp_path):
    from richfeedback.errors import UsageError

    with pytest.raises(UsageError, match="--policy pairs"):
        train(dpo_config(dataset, tmp_path / "a"))
    bad = dpo_config(pairs_dataset, tmp_path / "b")
    bad["loss"]["snr_gamma"] = 5.0
    with pytest.raises(UsageError, match="snr_gamma: null"):
        train(bad)
    bad = dpo_config(pairs_dataset, tmp_path / "c")
    bad["data"] = {**bad["data"], "extra_paths": [str(dataset)]}
    with pytest.raises(UsageError, match="extra_paths"):
        train(bad)
    bad = dpo_config(pairs_dataset, tmp_path / "d")
    bad["loss"]["objective"] = "ppo"
    with pytest.raises(UsageError, match="'denoising' or 'dpo'"):
        train(bad)
    bad = dpo_config(pairs_dataset, tmp_path / "e")
    bad["lora"] = {**bad["lora"], "init": "pissa"}
    with pytest.raises(UsageError, match="rewrites the base weights"):
        train(bad)
    # and pairs are not silently trained as plain images (each chosen image repeated, the rejected ones ignored)
    with pytest.raises(UsageError, match="loss.objective: dpo"):
        train(config(pairs_dataset, tmp_path / "f"))


def test_dpo_trains_an_sdxl_lora_with_both_text_encoders(pairs_dataset, tiny_sdxl_dir, tmp_path):
    """SDXL's pooled text embeddings and time ids go through DPO's doubled batch; both encoders' reference is base."""
    cfg = load_config(None, [f"data.path={pairs_dataset}", f"output_dir={tmp_path}",
                             f"model.pretrained={tiny_sdxl_dir}", "optim.batch_size=4", "optim.max_steps=3",
                             "optim.lr=5e-2", "lora.train_text_encoder=true", "loss.objective=dpo",
                             "loss.dpo_beta=500"])
    train(cfg)
    trained = losses(tmp_path)
    assert list(trained) == [1, 2, 3] and trained[1] == pytest.approx(np.log(2), abs=1e-6)
    from safetensors.torch import load_file

    keys = load_file(tmp_path / LORA_WEIGHTS).keys()
    assert {k.split(".")[0] for k in keys} == {"unet", "text_encoder", "text_encoder_2"}


def test_the_refl_diagnostic_writes_its_log_and_loras_that_diffusers_loads(tmp_path):
    """scripts/refl_diagnostic.py (README, Fine-tuning): one log row per step with the grad step among the last 6,
    checkpoints that load in a plain pipeline and change its images, and a clear refusal of a bad --grad-steps."""
    from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images, load_pipeline

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "refl"
    subprocess.run([sys.executable, str(root / "scripts/refl_diagnostic.py"), "--out", str(out), "--steps", "2",
                    "--batch-size", "2", "--save-every", "1", "--lr", "1e-2"], check=True, capture_output=True)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(19 <= row["grad_index"] <= 24 for row in log)
    assert all(row["loss"] == -row["reward"] for row in log)  # no pretraining term unless asked
    pipe = load_pipeline("embedded")
    before = generate_images(pipe, ["a red circle"], [0], **EMBEDDED_DEFAULTS)[0]
    pipe.load_lora_weights(str(out / "step-2"))
    after = generate_images(pipe, ["a red circle"], [0], **EMBEDDED_DEFAULTS)[0]
    assert (out / "step-1").is_dir() and np.abs(after.astype(int) - before.astype(int)).max() > 0
    bad = subprocess.run([sys.executable, str(root / "scripts/refl_diagnostic.py"), "--out", str(tmp_path / "x"),
                          "--grad-steps", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--grad-steps must be in [1, 25]" in bad.stderr


def test_an_unquoted_no_for_mixed_precision_means_no(tmp_path):
    """YAML reads `mixed_precision: no` (accelerate's own spelling) as false; the trainers take it as "no"."""
    path = tmp_path / "cfg.yaml"
    path.write_text("mixed_precision: no\n")
    assert load_config(str(path))["mixed_precision"] == "no"
    assert load_config(None, ["mixed_precision=no"])["mixed_precision"] == "no"
    assert load_config(None, ["mixed_precision=bf16"])["mixed_precision"] == "bf16"


def test_an_unquoted_no_in_a_loop_configs_train_section_trains(dataset, tmp_path):
    """`richfeedback finetune` reads its train section as every training config is read (`config_from_loop`)."""
    from richfeedback.finetune.train import config_from_loop

    loop = {"output_dir": str(tmp_path), "train": {"mixed_precision": False, "data": {"path": str(dataset)},
                                                   "optim": {"batch_size": 4, "max_steps": 1},
                                                   "checkpoint_every_steps": 100, "validation": {"every_steps": 100}}}
    out = train(config_from_loop(loop))
    assert (out / LORA_WEIGHTS).exists()
