"""The options of reward guidance and their defaults (no heavy imports: the command line builds its parser from
them)."""

NORMALIZATIONS = ("rms", "clip", "none")
PATHS = ("cheap", "accurate")

# The reward the embedded ShapesWorld generator is guided with when none is named: the embedded noise-aware latent
# aesthetic model (`reward_models.latent_aesthetic`), classifier guidance proper. The image-space alternative, RAHF's
# aesthetics head on the decoded x0 ("rahf:aesthetics"), gains at most ~0.8 of its unguided standard deviation before
# its edits start fooling it (colour blends inside shapes that the exact aesthetics rates down); the LAION aesthetic
# predictor knows photographs, not flat shapes, and needs weights we cannot download.
DEFAULT_REWARD = "latent-aesthetic"
# The default schedule (scale, every k-th step, window of the sampling steps) of each kind of reward, chosen on the
# embedded model on prompts the benchmark does not use (prompt seed 7, 64 images; benchmarks/bench_guidance.py measures
# them on its own prompts). A `RewardGuidance` left at None takes the one of its reward's kind.
#
# noise-aware (latent-aesthetic): the model predicts well at middle noise levels (dev PLCC 0.72-0.75 at t = 250, 0.32-0.47
# at t = 750), so the window skips the noisiest fifth of the schedule: 0.2 on every 2nd step of 20%-80% (8 of 25 steps)
# raises its score by 1.29 of its unguided standard deviation (wins 98% of same-seed pairs), RAHF's aesthetics (held
# out) by 0.93 sd, ShapesWorld's exact aesthetics from 0.69 to 0.79, with fewer artifacts (0.66 vs 0.72) at 1.06x the
# unguided time. The first 60% instead: 1.06 sd (RAHF 0.71). Neighbours: 0.15 -> 1.20 sd, 0.25 -> 1.37 sd, window
# 30%-90% -> 1.34 sd. Every step of the whole schedule: 1.39 sd while RAHF's gain falls to 0.36 sd and the exact
# aesthetics to 0.58: past the defaults even a noise-aware model starts to be fooled. The edits move objects towards a
# balanced layout, so prompts that ask for "on the left" lose accuracy.
#
# image rewards (rahf:aesthetics on the decoded x0): 0.15 on every 2nd step of the first 60% raises it by 0.7-0.8 sd;
# larger scales, more steps or later steps raise it further only by edits that fool it (colour blends inside shapes:
# exact aesthetics down, artifacts up), since late steps change pixels directly.
SCHEDULE_DEFAULTS = {
    "noise-aware": {"scale": 0.2, "every": 2, "window": (0.2, 0.8)},
    "image": {"scale": 0.15, "every": 2, "window": (0.0, 0.6)},
}


def default_schedule(noise_aware: bool) -> dict:
    """The default scale, every and window for a reward of that kind."""
    return dict(SCHEDULE_DEFAULTS["noise-aware" if noise_aware else "image"])
