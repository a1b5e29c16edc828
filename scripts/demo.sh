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

echo "== 6. Reward-filtered LoRA fine-tuning, all four stages (pool, score, filter, train) at demo size"
richfeedback finetune --config configs/finetune/demo.yaml --set output_dir="$OUT/finetune"
LORA="$OUT/finetune/lora"

echo "== 7. Repair: RAHF + artifact-segmenter heatmap -> mask -> 8 inpainted candidates -> the best by heat inside the mask (alignment-guarded)"
python -c "from richfeedback.inpaint.examples import write_artifact_folder; write_artifact_folder('$OUT/artifacts', n=8, seed=0)"
richfeedback inpaint-fix "$OUT/artifacts" --out "$OUT/inpaint"
richfeedback oracle "$OUT/artifacts" --out "$OUT/artifacts-oracle"
richfeedback oracle "$OUT/inpaint/fixed"

echo "== 8. Reward guidance: the same prompts and seeds, steered up the embedded noise-aware latent aesthetic model"
richfeedback generate --prompts "$OUT/prompts.txt" --n 4 --seed 0 --guidance latent-aesthetic --out "$OUT/guided"
python -m richfeedback.guidance.sheet "$OUT/generations" "$OUT/guided" --out "$OUT/guided_vs_unguided.png"
richfeedback oracle "$OUT/guided"

echo "== 9. A/B: base against fine-tuned on held-out prompts, same seeds, sides randomised"
richfeedback shapesworld prompts --n 8 --seed 5 --split heldout --out "$OUT/ab_prompts.txt"
richfeedback ab make --a embedded --b "embedded,lora=$LORA" --prompts "$OUT/ab_prompts.txt" --seeds 0-1 --out "$OUT/ab"
richfeedback ab auto "$OUT/ab" --model oracle --model rahf:overall
richfeedback ab simulate "$OUT/ab" --raters 3

echo
echo "Look at: $OUT/generations/grid.png (one row per prompt), $OUT/shapesworld/samples.png,"
echo "         $OUT/rahf/*_heatmaps.png (image | implausibility | misalignment), $OUT/rahf/predictions.jsonl,"
echo "         $OUT/generations/oracle.jsonl (per image, per word), $OUT/scores.jsonl,"
echo "         $OUT/finetune/lora/validation/*.png (fine-tuned samples), $OUT/inpaint/index.html and"
echo "         $OUT/inpaint/strips/*.png (before | heatmap | mask | after),"
echo "         $OUT/guided_vs_unguided.png (unguided | guided, with their latent-aesthetic score),"
echo "         $OUT/ab/auto/report.md and $OUT/ab/simulated/results/report.md (win rates)."
echo "Rate the A/B pairs yourself: open $OUT/ab/index.html in a browser, export, then:"
echo "         richfeedback ab results $OUT/ab --ratings ratings-*.json"
