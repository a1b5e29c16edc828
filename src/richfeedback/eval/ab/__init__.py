"""Side-by-side A/B evaluation: paired exports with a static rating page, human and automatic ratings, win rates.

    richfeedback ab make --a embedded --b "embedded,lora=runs/lora" --prompts prompts.txt --seeds 0-3 --out AB
    (open AB/index.html, rate, export)  richfeedback ab results AB --ratings ratings-*.json
    richfeedback ab auto AB --model oracle --model rahf:overall
    richfeedback ab simulate AB --raters 3          # ShapesWorld: simulated human raters, the human tables
"""

from .auto import run_auto
from .export import make_ab, parse_questions, parse_seeds, read_ab
from .ratings import collect_preferences, read_ratings_file
from .report import write_study
from .simulate import simulate_study
from .stats import study_summary

__all__ = ["collect_preferences", "make_ab", "parse_questions", "parse_seeds", "read_ab", "read_ratings_file",
           "run_auto", "simulate_study", "study_summary", "write_study"]
