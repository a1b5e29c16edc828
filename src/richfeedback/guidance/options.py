"""The options of reward guidance and their defaults (no heavy imports: the command line builds its parser from
them)."""

NORMALIZATIONS = ("rms", "clip", "none")
PATHS = ("cheap", "accurate")

# The reward the embedded ShapesWorld generator is guided with when none is named: the embedded RAHF's aesthetics
# head (the LAION aesthetic predictor knows photographs, not flat shapes, and needs weights we cannot download).
DEFAULT_REWARD = "rahf:aesthetics"
# Defaults chosen on the embedded model (benchmarks/bench_guidance.py, 64 images; re-checked on other prompts): every
# 2nd step of the first 60% of the schedule (8 of 25 steps) at 0.15, the cheap path through the embedded tiny decoder,
# raises rahf:aesthetics by 0.7-0.8 of its unguided standard deviation (wins 94% of same-seed pairs) at 1.6x the
# unguided time and leaves ShapesWorld's exact aesthetics level (0.677 vs 0.682). Guiding every step raises the
# guiding reward further (1.0 sd) while the exact aesthetics falls (0.59) and the oracle finds artifacts in 91% of
# the images: past this point the edits fool the reward model rather than improve the image.
DEFAULT_SCALE = 0.15
DEFAULT_EVERY = 2
DEFAULT_WINDOW = (0.0, 0.6)
