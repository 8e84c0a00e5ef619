#!/usr/bin/env bash
# Issue 12 (CPU speed) figures: every benchmark twice, one after another; run on a quiet machine.
# Usage: bash benchmarks/investigations/cpu_speed.sh [OUT]   (logs and results in OUT, default bench_results/cpu-speed-TIME)
set -u
cd "$(dirname "$0")/../.."  # the repository root: OUT is relative to it
OUT=${1:-bench_results/cpu-speed-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 COLUMNS=200
PY=.venv/bin/python
T=.venv/bin/tritonize
R=.tritonize/capacity_repository
stamp() { echo "=== $(date +%T) $*" >> $OUT/timeline.txt; }
stamp convert
$T convert bert --model sentence-transformers/all-MiniLM-L6-v2 --task embedding -r $R > $OUT/convert.log 2>&1
$T convert bert --model sentence-transformers/all-MiniLM-L6-v2 --task embedding -r $R --name all-minilm-l6-v2-int8 --quantize >> $OUT/convert.log 2>&1
for run in 1 2; do
  stamp plan-mix-$run
  $T plan -r $R --scenario embed-mix --model all-minilm-l6-v2,all-minilm-l6-v2-int8 --max-batch-size 64 --threads 1 \
     --users 1,2,4,8,16 --seconds 5 --rounds 2 --slo-ms 50 --target-rps 1000 --baselines --control --confirm --out $OUT/plan-mix-$run > $OUT/plan-mix-$run.log 2>&1
  $PY -m benchmarks.investigations.plan_targets $OUT/plan-mix-$run/results.json > $OUT/targets-mix-$run.log 2>&1
  stamp engine-$run
  $PY -m benchmarks.engine_bench --pin --seconds 3 --rounds 2 --repository $OUT/eb_repo --out $OUT/engine-$run.json > $OUT/engine-$run.log 2>&1
  stamp gen-$run
  $PY -m benchmarks.generation_bench --models gpt2 --output $OUT/gen-$run.json > $OUT/gen-$run.log 2>&1
  stamp tts-$run
  $PY -m benchmarks.tts_bench > $OUT/tts-$run.log 2>&1
  stamp plan-short-$run
  $T plan -r $R --scenario embed-short --model all-minilm-l6-v2 --max-batch-size 64 --threads 1 \
     --users 1,2,4,8,16 --seconds 5 --rounds 2 --slo-ms 50 --target-rps 1000 --baselines --control --out $OUT/plan-short-$run > $OUT/plan-short-$run.log 2>&1
  $PY -m benchmarks.investigations.plan_targets $OUT/plan-short-$run/results.json > $OUT/targets-short-$run.log 2>&1
done
stamp int8-inprocess
$PY -m benchmarks.int8_bench --out $OUT/int8.json > $OUT/int8-inprocess.log 2>&1
stamp done
