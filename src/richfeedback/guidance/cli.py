"""The reward-guidance options of `richfeedback generate`:

    richfeedback generate --prompts p.txt --guidance-scale 0.2 --out out/guided      # embedded: latent-aesthetic
    richfeedback generate --prompts p.txt --guidance rahf:aesthetics --guidance-scale 0.1 --out out/guided
    richfeedback generate --prompt "a cat" --model path/to/sd --guidance "aesthetic=weights/aesthetic/" \
        --guidance-scale 0.1 --guidance-every 1 --guidance-window 0 0.6 --guidance-path accurate --out out/cat
"""

from __future__ import annotations

import argparse

from .options import DEFAULT_REWARD, NORMALIZATIONS, PATHS, SCHEDULE_DEFAULTS


def add_guidance_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reward guidance (richfeedback.guidance)")
    group.add_argument("--guidance", metavar="REWARD", default=None,
                       help="steer sampling up the gradient of a reward: a reward-model name (latent-aesthetic, "
                            "rahf:aesthetics, aesthetic, pickscore, ...), NAME=WEIGHTS, or a sum such as "
                            "'0.7*rahf:aesthetics+0.3*rahf:plausibility'. With --guidance-scale alone, the embedded "
                            f"model is guided by {DEFAULT_REWARD}")
    group.add_argument("--guidance-scale", type=float, default=None,
                       help=f"size of each reward-guidance edit in units of the step's noise level (default "
                            f"{SCHEDULE_DEFAULTS['noise-aware']['scale']} for a noise-aware reward such as latent-aesthetic, "
                            f"{SCHEDULE_DEFAULTS['image']['scale']} for an image reward; 0 = unguided)")
    group.add_argument("--guidance-every", type=int, default=None,
                       help="guide every k-th step (default 2)")
    group.add_argument("--guidance-window", type=float, nargs=2, default=None, metavar=("START", "END"),
                       help="fractions of the sampling steps that are guided (default: "
                            f"{' '.join(map(str, SCHEDULE_DEFAULTS['noise-aware']['window']))} for a noise-aware "
                            f"reward, {' '.join(map(str, SCHEDULE_DEFAULTS['image']['window']))} for an image reward)")
    group.add_argument("--guidance-normalize", choices=NORMALIZATIONS, default="rms",
                       help="per-image gradient normalisation")
    group.add_argument("--guidance-path", choices=PATHS, default="cheap",
                       help="for image rewards, cheap: gradient through the x0 formula and the VAE; accurate: also "
                            "through the UNet (a noise-aware reward such as latent-aesthetic scores x_t itself)")
    group.add_argument("--guidance-decoder", default="auto", metavar="DECODER",
                       help="what decodes the predicted x0 for the reward: auto (the embedded generator's tiny "
                            "decoder on the embedded model, else the VAE), vae, embedded, or a diffusers "
                            "AutoencoderTiny folder or hub id (madebyollin/taesd for SD 1.5): cheaper gradients")


def guidance_from_args(args, embedded: bool):
    """The `RewardGuidance` the arguments ask for, or None; errors are ValueErrors that say what to pass."""
    if args.guidance is None and args.guidance_scale is None:
        return None
    if args.guidance is None and not embedded:
        raise ValueError("--guidance-scale needs --guidance REWARD for a model other than the embedded one "
                         "(e.g. --guidance aesthetic=path/to/weights)")
    from .reward_guidance import load_guidance

    try:
        return load_guidance(args.guidance, scale=args.guidance_scale, device=args.device, every=args.guidance_every,
                             window=None if args.guidance_window is None else tuple(args.guidance_window),
                             normalize=args.guidance_normalize,
                             path=args.guidance_path, decoder=args.guidance_decoder)
    except KeyError as err:  # an unknown reward-model name
        raise ValueError(f"--guidance: {err.args[0]}") from None
