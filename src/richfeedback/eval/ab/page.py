"""The rating page: one self-contained HTML file (inline CSS and JS, images by relative path) that opens from disk.

The page knows pairs only as left and right images, the prompt and the questions; ratings live in the browser's
localStorage under the AB id (closing the tab loses nothing) and leave it as a downloaded JSON or CSV file, which
`richfeedback ab results` reads. The template is `rating_page.html` next to this module; the data goes in as one
JSON object.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

TEMPLATE = Path(__file__).with_name("rating_page.html")
DATA_PLACEHOLDER = "/*__AB_DATA__*/null"
# The paper's five-point side-by-side scale (RAHF, Liang et al. 2024), written as left/right so that raters cannot
# confuse the page's sides with the systems A and B. Values: negative = left better.
SCALE = (
    {"value": -2, "label": "Left much better"},
    {"value": -1, "label": "Left slightly better"},
    {"value": 0, "label": "About the same"},
    {"value": 1, "label": "Right slightly better"},
    {"value": 2, "label": "Right much better"},
)
RATINGS_FORMAT = "richfeedback-ab-ratings"


def page_data(meta: dict, pairs: Sequence[dict]) -> dict:
    """What the page needs, and nothing that tells which side is which system."""
    return {
        "format": RATINGS_FORMAT, "ab_id": meta["id"], "title": meta.get("title") or "Which image is better?",
        "questions": meta["questions"], "scale": list(SCALE),
        "pairs": [{"id": p["pair_id"], "prompt": p["prompt"], "left": p["image_left"], "right": p["image_right"]}
                  for p in pairs],
    }


def render_rating_page(meta: dict, pairs: Sequence[dict]) -> str:
    template = TEMPLATE.read_text(encoding="utf-8")
    if DATA_PLACEHOLDER not in template:
        raise RuntimeError(f"{TEMPLATE} lost its data placeholder {DATA_PLACEHOLDER!r}")
    # "</" inside a <script> would end it early (a prompt could contain "</script>"); "<\/" is the same JSON string.
    data = json.dumps(page_data(meta, pairs), ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\u0021--")
    return template.replace(DATA_PLACEHOLDER, data)


def write_rating_page(path: str | os.PathLike, meta: dict, pairs: Sequence[dict]) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_rating_page(meta, pairs), encoding="utf-8")
    os.replace(tmp, path)
    return path
