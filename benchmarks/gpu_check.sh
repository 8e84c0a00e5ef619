#!/usr/bin/env bash
# The GPU machine's one line: bash benchmarks/gpu_check.sh [--dry-run] [gpu_check options]
# Installs the carried wheels (benchmarks/gpu_wheels.txt, in wheels/) into a private folder, puts the
# working tree on the path as the installed `tritonize` would be, and runs benchmarks/gpu_check.py,
# writing gpu_check.json and gpu_check.md to $OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
SITE="${TRITONIZE_GPU_SITE:-${TMPDIR:-/tmp}/tritonize-gpu-site}"
missing=0
while read -r wheel _; do
  [[ -z "$wheel" || "$wheel" == \#* ]] && continue
  [[ -f "$ROOT/wheels/$wheel" ]] || { echo "gpu_check.sh: missing wheels/$wheel (see benchmarks/gpu_wheels.txt)" >&2; missing=1; }
done < "$ROOT/benchmarks/gpu_wheels.txt"
[[ $missing == 0 ]] || exit 2
rm -rf "$SITE" && mkdir -p "$SITE/tritonize"
"$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$ROOT"/wheels/*.whl
# The layout pyproject's package-dir maps: tritonize/ plus the two top-level folders mapped into it;
# the benchmarks are checkout scripts, beside it.
for f in "$ROOT"/tritonize/*; do ln -s "$f" "$SITE/tritonize/"; done
for d in client converters; do ln -s "$ROOT/$d" "$SITE/tritonize/$d"; done
ln -s "$ROOT/benchmarks" "$SITE/benchmarks"
# The Python-backend stubs inherit this environment, so they import the same tree.
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRITONIZE_CACHE="$SITE/cache"
OUT_DIR="${OUT:-$ROOT/bench_results/gpu_check}"
cd "$SITE"  # not the checkout: its tritonize/ folder would shadow the mapped package
exec "$PY" -m benchmarks.gpu_check --out "$OUT_DIR" "$@"
