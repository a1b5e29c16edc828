"""The decode inside a guided step: the embedded generator's VAE decoder against its distilled tiny decoder
(`embedded/shapes-sd-tiny-decoder`), on the latents guidance decodes (the scheduler's predicted x0 along sampling runs
of held-out prompts).

Per decoder, in the same run, alternating: seconds for decode + backward to the latents (what the cheap path pays per
guided step, besides the reward), and for decode + rahf:aesthetics + backward (the whole cheap-path gradient); their
ratios VAE / tiny. Fidelity: PSNR of the tiny decoder's images against the VAE's, and the cosine between the two
rahf:aesthetics gradients with respect to the latents (the direction guidance moves in).
"""

from __future__ import annotations

import statistics
import time

import torch


def predicted_x0_latents(pipe, prompts: list[str]) -> torch.Tensor:
    from richfeedback.generation import EMBEDDED_DEFAULTS
    from richfeedback.guidance.schedulers import recording_predicted_x0

    with recording_predicted_x0(pipe) as recorded:
        generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        pipe(prompts, generator=generators, output_type="latent", **EMBEDDED_DEFAULTS)
    return torch.stack(recorded, 1)  # (prompts, steps, 4, h, w)


def run(quick: bool = False) -> dict:
    from richfeedback.generation import load_pipeline
    from richfeedback.guidance.reward_guidance import decode_to_unit_range, load_tiny_decoder
    from richfeedback.reward_models import load_reward_model
    from richfeedback.shapesworld.scene import sample_prompts

    torch.manual_seed(0)
    pipe = load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    decoders = {"vae": pipe.vae, "tiny": load_tiny_decoder("embedded")}
    reward = load_reward_model("rahf:aesthetics")
    prompts = sample_prompts(8, seed=100, split="heldout")
    x0 = predicted_x0_latents(pipe, prompts)  # (8, 25, 4, h, w)
    steps = list(range(0, x0.shape[1], 3))
    repeats = 3 if quick else 7

    def gradient(decoder, latents, with_reward: bool):
        z = latents.clone().requires_grad_(True)
        images = decode_to_unit_range(decoder, z)
        value = reward.differentiable(prompts, images).sum() if with_reward else images.sum()
        return torch.autograd.grad(value, z)[0]

    times = {(name, part): [] for name in decoders for part in ("decode", "decode+reward")}
    for _ in range(repeats):
        for step in steps[:3]:
            for name, decoder in decoders.items():
                for part in ("decode", "decode+reward"):
                    start = time.perf_counter()
                    gradient(decoder, x0[:, step], part == "decode+reward")
                    times[(name, part)].append(time.perf_counter() - start)
    median = {key: statistics.median(values) for key, values in times.items()}

    cosines, psnrs = [], []
    for step in steps:
        grads = {name: gradient(d, x0[:, step], True).flatten(1) for name, d in decoders.items()}
        cosines.append(float(torch.nn.functional.cosine_similarity(grads["vae"], grads["tiny"]).mean()))
        with torch.no_grad():
            vae, tiny = (decode_to_unit_range(d, x0[:, step]) for d in decoders.values())
        mse = (vae - tiny).pow(2).flatten(1).mean(1)
        psnrs.append(float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()))
    rows = [{"part": part, "vae_ms": 1000 * median[("vae", part)], "tiny_ms": 1000 * median[("tiny", part)],
             "speedup": median[("vae", part)] / median[("tiny", part)]} for part in ("decode", "decode+reward")]
    rows.append({"part": "fidelity", "psnr_db": statistics.mean(psnrs), "grad_cosine": statistics.mean(cosines),
                 "grad_cosine_first_step": cosines[0], "grad_cosine_last_step": cosines[-1]})
    return {"rows": rows, "batch": len(prompts), "steps_checked": steps,
            "decoder_parameters": {name: sum(p.numel() for p in (d.decoder.parameters())) for name, d in decoders.items()},
            "threads": torch.get_num_threads()}
