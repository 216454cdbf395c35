#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool): end-to-end correctness and speed of the CUDA engine,
# logs and JSON under $OUT. Build here first: cmake -B build-gpu -DPIRT_CUDA=ON && ninja -C build-gpu pirt
#   bash bench/device_e2e.sh [quick]      (quick: tiny goldens and one full-size bench only)
set -uo pipefail
B=${PIRT:-build-gpu/pirt}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
py() { python3 "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"

echo "== tiny goldens on CUDA (bf16) vs the fp32 PyTorch reference"
for c in tests/data/golden/*/; do
  name=$(basename "$c")
  read -r steps model < <(py -c "import json;d=json.load(open('$c/case.json'));print(d['steps'],d['model'])")
  $B infer --device cuda --model "tests/data/$model" --inputs "$c/inputs.safetensors" --out "/tmp/g_$name.safetensors" \
    --steps "$steps" || echo "FAILED infer $name"
  echo -n "$name "; py bench/compare_actions.py "$c/actions.safetensors" "/tmp/g_$name.safetensors"
done

echo "== full-size pi0: pirt (CUDA, bf16) vs the PyTorch reference (CUDA, fp32)"
$B make-checkpoint --arch pi0 --out /tmp/pi0 >/dev/null
for cams in 3 2; do
  $B make-inputs --model pi0 --cameras $cams --out /tmp/in$cams.safetensors
done
sync
/usr/bin/time -f "process start to actions written: %e s (max RSS %M KB)" \
  $B infer --device cuda --model /tmp/pi0 --inputs /tmp/in3.safetensors --out /tmp/a3_cuda.safetensors
for cams in ${REF_CAMERAS:-3}; do
  [ $cams = 2 ] && $B infer --device cuda --model /tmp/pi0 --inputs /tmp/in2.safetensors --out /tmp/a2_cuda.safetensors
  py tests/reference/pi0_reference.py --model /tmp/pi0 --inputs /tmp/in$cams.safetensors --out /tmp/a${cams}_ref.safetensors --device cuda
  echo -n "pi0 $cams cameras: "; py bench/compare_actions.py /tmp/a${cams}_ref.safetensors /tmp/a${cams}_cuda.safetensors
done

echo "== pirt bench (full-size random pi0)"
$B bench --model /tmp/pi0 --cameras 3 --iters 100 --json "$OUT/bench_pi0_3cam.json"
$B bench --model /tmp/pi0 --cameras 2 --absent 1 --iters 100 --json "$OUT/bench_pi0_2cam.json"
[ "${1:-}" = quick ] && exit 0
$B bench --model pi05 --cameras 2 --absent 1 --horizon 10 --iters 100 --json "$OUT/bench_pi05_2cam_h10.json"
$B bench --model pi05 --cameras 2 --absent 1 --iters 100 --json "$OUT/bench_pi05_2cam_h50.json"

echo "== ablations (3 cameras; drop-padding with 2 cameras + 1 absent and a 20-token prompt)"
for flag in --no-graphs --no-small-gemm --no-fuse; do
  $B bench --model /tmp/pi0 --cameras 3 --iters 50 $flag | tail -1 | sed "s/^/$flag: /"
done
$B bench --model /tmp/pi0 --cameras 2 --absent 1 --prompt-len 20 --iters 50 | tail -1 | sed "s/^/drop (default): /"
$B bench --model /tmp/pi0 --cameras 2 --absent 1 --prompt-len 20 --iters 50 --no-drop-padding | tail -1 | sed "s/^/--no-drop-padding: /"

echo "== PyTorch reference, bf16, torch.compile (CUDA graphs)"
timeout 420 python3 bench/torch_baseline.py --model /tmp/pi0 --inputs /tmp/in3.safetensors --mode reduce-overhead \
  --json "$OUT/torch_3cam.json" 2>&1 | grep -vE "Warning|warn" | tail -3
