"""The reward-guidance options of `richfeedback generate`:

    richfeedback generate --prompts p.txt --guidance rahf:aesthetics --guidance-scale 0.1 --out out/guided
    richfeedback generate --prompt "a cat" --model path/to/sd --guidance "aesthetic=weights/aesthetic/" \
        --guidance-scale 0.1 --guidance-every 1 --guidance-window 0 0.6 --guidance-path accurate --out out/cat
"""

from __future__ import annotations

import argparse

from .options import DEFAULT_EVERY, DEFAULT_REWARD, DEFAULT_SCALE, DEFAULT_WINDOW, NORMALIZATIONS, PATHS


def add_guidance_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reward guidance (richfeedback.guidance)")
    group.add_argument("--guidance", metavar="REWARD", default=None,
                       help="steer sampling up the gradient of a reward: a reward-model name (rahf:aesthetics, "
                            "aesthetic, pickscore, ...), NAME=WEIGHTS, or a sum such as "
                            "'0.7*rahf:aesthetics+0.3*rahf:plausibility'. With --guidance-scale alone, the embedded "
                            f"model is guided by {DEFAULT_REWARD}")
    group.add_argument("--guidance-scale", type=float, default=None,
                       help=f"size of each reward-guidance edit in units of the step's noise level (default "
                            f"{DEFAULT_SCALE} with --guidance; 0 = unguided)")
    group.add_argument("--guidance-every", type=int, default=DEFAULT_EVERY, help="guide every k-th step")
    group.add_argument("--guidance-window", type=float, nargs=2, default=list(DEFAULT_WINDOW),
                       metavar=("START", "END"), help="fractions of the sampling steps that are guided")
    group.add_argument("--guidance-normalize", choices=NORMALIZATIONS, default="rms",
                       help="per-image gradient normalisation")
    group.add_argument("--guidance-path", choices=PATHS, default="cheap",
                       help="cheap: gradient through the x0 formula and the VAE; accurate: also through the UNet")
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

    scale = DEFAULT_SCALE if args.guidance_scale is None else args.guidance_scale
    try:
        return load_guidance(args.guidance, scale=scale, device=args.device, every=args.guidance_every,
                             window=tuple(args.guidance_window), normalize=args.guidance_normalize,
                             path=args.guidance_path, decoder=args.guidance_decoder)
    except KeyError as err:  # an unknown reward-model name
        raise ValueError(f"--guidance: {err.args[0]}") from None
