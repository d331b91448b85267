#!/usr/bin/env bash
# The README's model-comparison tables (issue #5): every applicable model on every
# benchmark dataset through `hmum bench`, two queues side by side (one core each).
# Results: benchmarks/results/<dataset>/results.{md,csv,json}; finished cells are
# reused when the script is run again (resume).
#
# Settings are the paper's defaults except where a dataset is too small for them
# (batch 4096 would be one step per epoch on IHDP's 471 training rows) or too big
# for this 2-core machine's time budget (epochs capped); they are printed in each
# results.md and listed here.
set -euo pipefail
cd "$(dirname "$0")/.."
HMUM=${HMUM:-.venv/bin/hmum}
OUT=benchmarks/results
B() { "$HMUM" bench --threads 1 "$@"; }

queue_a() {
  B -d ihdp --seeds 1 -o replications=10 --epochs 30 --batch-size 64 --out $OUT/ihdp
  B -d criteo --seeds 3 --epochs 20 --batch-size 512 --out $OUT/criteo
  B -d simulator --seeds 3 -o n_users=50000 -o effect_scale=5 --epochs 10 --batch-size 1024 \
    --out $OUT/simulator
  B -d acic2016 --seeds 1 -o replications=5 --epochs 20 --batch-size 256 --out $OUT/acic2016
}
queue_b() {
  B -d starbucks --seeds 3 --epochs 10 --out $OUT/starbucks
  B -d social_pressure --seeds 2 --epochs 5 --out $OUT/social_pressure
}
queue_a > $OUT/queue_a.log 2>&1 &
queue_b > $OUT/queue_b.log 2>&1 &
wait
