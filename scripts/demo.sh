#!/usr/bin/env bash
# `make demo`: the loop on the embedded ShapesWorld models, on a fresh machine, offline.
set -euo pipefail
OUT=${OUT:-out/demo}
mkdir -p "$OUT"

echo "== 1. ShapesWorld: prompts, clean renders, injected artifacts and misalignments"
richfeedback shapesworld sample --n 8 --out "$OUT/shapesworld"
richfeedback shapesworld prompts --n 8 --seed 1 --split all --out "$OUT/prompts.txt"

echo "== 2. Generate with the embedded text-to-image model (4 seeds per prompt)"
richfeedback generate --prompts "$OUT/prompts.txt" --n 4 --seed 0 --out "$OUT/generations"

echo "== 3. The oracle judges every word of every prompt and finds artifacts"
richfeedback oracle "$OUT/generations"

echo "== 4. The embedded RAHF model predicts heatmaps, scores and misaligned words for the first prompt's images"
first_prompt=$(head -n 1 "$OUT/prompts.txt")
images=$(python -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; print(' '.join(sys.argv[2] + '/' + r['file_name'] for r in rows if r['prompt'] == sys.argv[3]))" "$OUT/generations/manifest.jsonl" "$OUT/generations" "$first_prompt")
# shellcheck disable=SC2086
richfeedback rahf predict $images --prompt "$first_prompt" --out "$OUT/rahf"

echo "== 5. Every generation scored through the common reward-model interface (RAHF's four scores, offline)"
richfeedback score "$OUT/generations" --model rahf:plausibility --model rahf:alignment --model rahf:aesthetics \
    --model rahf:overall --out "$OUT/scores.jsonl"

echo
echo "Look at: $OUT/generations/grid.png (one row per prompt), $OUT/shapesworld/samples.png,"
echo "         $OUT/rahf/*_heatmaps.png (image | implausibility | misalignment), $OUT/rahf/predictions.jsonl,"
echo "         $OUT/generations/oracle.jsonl (per image, per word), $OUT/scores.jsonl."
