"""The options of reward guidance and their defaults (no heavy imports: the command line builds its parser from
them)."""

NORMALIZATIONS = ("rms", "clip", "none")
PATHS = ("cheap", "accurate")

# The reward the embedded ShapesWorld generator is guided with when none is named: the embedded RAHF's aesthetics
# head (the LAION aesthetic predictor knows photographs, not flat shapes, and needs weights we cannot download).
DEFAULT_REWARD = "rahf:aesthetics"
# Defaults chosen on the embedded model (benchmarks/bench_guidance.py): every 3rd step of the first 60% of the
# schedule (5 of 25 steps) at 0.1 raises rahf:aesthetics by about one unguided standard deviation, keeps the exact
# ShapesWorld aesthetics up, and costs under 2x the unguided time. Guiding every step, or late steps, raises the
# guiding reward further while the true aesthetics falls: the late edits fool the reward model.
DEFAULT_SCALE = 0.1
DEFAULT_EVERY = 3
DEFAULT_WINDOW = (0.0, 0.6)
