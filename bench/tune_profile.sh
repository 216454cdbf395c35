#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool): GEMM tuning, the profile of one call, bench with and
# without the tuned table, and the ablations. Logs and files under $OUT. Build here first:
#   cmake -S . -B build-prof -G Ninja -DPIRT_CUDA=ON -DPIRT_CUDA_ARCHS=90a && ninja -C build-prof pirt
#   mkdir -p build-prof-run/lib && cp build-prof/pirt build-prof-run/ && cp /usr/local/cuda/lib64/libcupti.so.13 build-prof-run/lib/
# and carry build-prof-run.   bash bench/tune_profile.sh [tune|profile|bench|all|verify]
# verify: the shipped table (bench/tuning/, no --tuning flag) against bench/bkc.json, the heuristic
# on the same machine, the ablations, and the profile with its trace.
set -uo pipefail
B=${PIRT:-build-prof-run/pirt}
OUT=${OUT:-/tmp/out}
WHAT=${1:-all}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"
echo "== loader: libcupti / cuBLASLt as the binary finds them"
ldd "$B" | grep -E "cupti|cublasLt|not found" | tee -a "$OUT/gpu.txt"
if ldd "$B" | grep -q "not found"; then
  export LD_LIBRARY_PATH="$(dirname "$B")/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using the carried libraries in $(dirname "$B")/lib" | tee -a "$OUT/gpu.txt"
fi
[ -d /tmp/pi0 ] || $B make-checkpoint --arch pi0 --out /tmp/pi0 >/dev/null
TABLE=$OUT/h100.csv
if [ "$WHAT" = all ] || [ "$WHAT" = tune ]; then
  echo "== tune (3 cameras, then 2 cameras + 1 absent, merged)"
  $B tune --model /tmp/pi0 --cameras 3 --candidates 24 --out /tmp/tune3.csv 2>&1 | tee "$OUT/tune.log"
  $B tune --model /tmp/pi0 --cameras 2 --absent 1 --candidates 24 --merge /tmp/tune3.csv --out "$TABLE" 2>&1 | tee -a "$OUT/tune.log"
fi
[ -f "$TABLE" ] || TABLE=${TUNED:-bench/tuning/h100.csv}
if [ "$WHAT" = all ] || [ "$WHAT" = profile ]; then
  echo "== profile (graphs, tuned table)"
  $B profile --model /tmp/pi0 --tuning "$TABLE" --trace "$OUT/trace.json" --top 20 2>&1 | tee "$OUT/profile.log"
  echo "== profile (--no-graphs: eager attribution)"
  $B profile --model /tmp/pi0 --tuning "$TABLE" --no-graphs --top 5 2>&1 | tee "$OUT/profile_eager.log"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  echo "== bench: heuristic (--tuning none) vs tuned table"
  for cams in 3 2; do
    for t in none "$TABLE"; do
      echo -n "cams=$cams tuning=$(basename "$t"): "
      $B bench --model /tmp/pi0 --cameras $cams --absent $((3 - cams)) --iters 60 --tuning "$t" \
        --json "$OUT/bench_${cams}cam_$(basename "$t" .csv).json" 2>&1 | tail -1
    done
  done
  echo "== ablations (tuned table; 3 cameras; drop-padding with 2 cameras + 1 absent, 20-token prompt)"
  for flag in "" --no-graphs --no-small-gemm --no-fuse; do
    echo -n "${flag:-default}: "
    $B bench --model /tmp/pi0 --cameras 3 --iters 30 --tuning "$TABLE" $flag 2>&1 | tail -1
  done
  for flag in "" --no-drop-padding; do
    echo -n "2cam+1absent p20 ${flag:-default}: "
    $B bench --model /tmp/pi0 --cameras 2 --absent 1 --prompt-len 20 --iters 30 --tuning "$TABLE" $flag 2>&1 | tail -1
  done
fi
if [ "$WHAT" = verify ]; then
  keep='tuned GEMM|^mean|check:|REGRESSION|error'
  echo "== shipped table (no --tuning flag) vs bench/bkc.json (--model pi0: the embedded random model)"
  $B bench --model pi0 --cameras 3 --iters 100 --check bench/bkc.json --json "$OUT/bench_3cam.json" 2>&1 | grep -E "$keep"
  $B bench --model pi0 --cameras 2 --absent 1 --iters 100 --check bench/bkc.json --json "$OUT/bench_2cam.json" 2>&1 | grep -E "$keep"
  $B bench --model pi0 --cameras 2 --absent 1 --prompt-len 20 --iters 100 --check bench/bkc.json 2>&1 | grep -E "$keep"
  echo "== the heuristic (--tuning none), same machine; and without our small-M kernel"
  for flag in "" --no-small-gemm; do
    echo -n "3cam none ${flag}: "; $B bench --model /tmp/pi0 --cameras 3 --iters 100 --tuning none $flag 2>&1 | tail -1
  done
  echo -n "2cam none: "; $B bench --model /tmp/pi0 --cameras 2 --absent 1 --iters 100 --tuning none 2>&1 | tail -1
  echo "== ablations with the shipped table (3 cameras; drop-padding: 2 cameras + 1 absent, 20-token prompt)"
  for flag in "" --no-graphs --no-small-gemm --no-fuse; do
    echo -n "${flag:-default}: "; $B bench --model /tmp/pi0 --cameras 3 --iters 50 $flag 2>&1 | tail -1
  done
  for flag in "" --no-drop-padding; do
    echo -n "2cam+1absent p20 ${flag:-default}: "
    $B bench --model /tmp/pi0 --cameras 2 --absent 1 --prompt-len 20 --iters 50 $flag 2>&1 | tail -1
  done
  echo "== profile (shipped table)"
  $B profile --model /tmp/pi0 --trace "$OUT/trace.json" --top 20 2>&1 | tee "$OUT/profile.log"
fi
