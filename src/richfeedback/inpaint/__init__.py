"""Heatmap-driven repair (`inpaint-fix`): heatmap -> mask -> N inpainted candidates -> composite -> best by reward.

Read in this order: `masks` (heatmap to mask, feathering), `repair` (the diffusers inpainting call and the pixel-space
composite), `selection` (best-of-N by a reward), `fix` (one image, then a folder of files), `report` (what is
written), `cli`.
"""

import importlib

# Imported on first use, so that `richfeedback --help` (which registers `inpaint-fix`) does not load torch.
_EXPORTS = {
    "FixResult": "fix", "FixSettings": "fix", "InpaintFixer": "fix", "fix_files": "fix",
    "MaskConfig": "masks", "MaskError": "masks", "feather_mask": "masks", "heatmap_to_mask": "masks",
    "composite": "repair", "inpaint_candidates": "repair", "load_inpaint_pipeline": "repair",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
