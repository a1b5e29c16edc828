"""The options of reward guidance and their defaults (no heavy imports: the command line builds its parser from
them)."""

NORMALIZATIONS = ("rms", "clip", "none")
PATHS = ("cheap", "accurate")

# The reward the embedded ShapesWorld generator is guided with when none is named: the embedded RAHF's aesthetics
# head (the LAION aesthetic predictor knows photographs, not flat shapes, and needs weights we cannot download).
DEFAULT_REWARD = "rahf:aesthetics"
# Defaults chosen on the embedded model (benchmarks/bench_guidance.py): every 2nd step of the first 60% of the
# schedule (8 of 25 steps) at 0.15. Guiding more steps, later steps or harder raises the guiding reward further
# while ShapesWorld's exact aesthetics falls and artifacts appear: the edits start to fool the reward model.
DEFAULT_SCALE = 0.15
DEFAULT_EVERY = 2
DEFAULT_WINDOW = (0.0, 0.6)
