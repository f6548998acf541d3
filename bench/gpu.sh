#!/usr/bin/env bash
# Stage one measured on a GPU machine in one prepared run (well under 10 minutes there).
#
# The machine has python3 with torch (whatever version it has) and nothing of ours: the other packages
# come from wheels carried in .gpu/ (`make gpu-carry` gathers them here, with the fer2013 weights),
# installed --no-deps into a folder of their own. Then: the GPU tests (tests/test_cuda.py), and
# bench/clips_in_flight.py for each backbone (inception, the headline `make embed BACKBONE=inception`
# job, with random weights; fer2013) sweeping clips in flight and CNN batch sizes on DAiSEE-shaped
# clips against the CNN alone on ready crops. The last line on stdout is one JSON object: per
# backbone frames/s end to end, the ceiling, c/b, per-step times, GPU memory; the tests' result, the
# versions and the seconds each took.
#
# On the device machine: carry [".gpu", "data/footage"], command `bash bench/gpu.sh`.
# Rehearsed here on the CPU from a fresh venv holding only what the GPU image holds: `make gpu-rehearsal`.
# Settings (environment): PY (python3), DEVICE (cuda), CLIPS (48), IN_FLIGHT (1,8,16,32),
# BATCHES (64,256), BACKBONES (inception,fer2013), ROUNDS (1), CARRY (.gpu), SITE (/tmp/affectseq-site),
# OUT (where the logs go).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
CLIPS=${CLIPS:-48}
IN_FLIGHT=${IN_FLIGHT:-1,8,16,32}
BACKBONES=${BACKBONES:-inception,fer2013}  # inception (random weights: speed does not depend on them) is the headline job
ROUNDS=${ROUNDS:-1}
BATCHES=${BATCHES:-64,256}
CARRY=${CARRY:-.gpu}
SITE=${SITE:-/tmp/affectseq-site}
OUT=${OUT:-$(mktemp -d /tmp/affectseq-gpu-XXXX)}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "[gpu.sh $(($(date +%s) - start)) s] $*" >&2; }

if ! ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    echo "gpu.sh: no wheels in $CARRY/wheels; fix: run \`make gpu-carry\` on a machine with the registry, and carry $CARRY" >&2
    exit 2
fi
step "installing $(ls "$CARRY"/wheels/*.whl | wc -l) carried wheels into $SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY"/wheels/*.whl
export PYTHONPATH="$SITE:$PWD" TORCH_HOME="$PWD/$CARRY/torch_home" PYTHONUNBUFFERED=1
"$PY" -c "import torch, torchvision, av, zarr, facenet_pytorch; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" >&2

step "tests (tests/test_cuda.py on $DEVICE, tests/test_video.py)"
if [ "$DEVICE" = cpu ]; then
    echo "gpu.sh: on the CPU tests/test_cuda.py compares the CPU with itself: a rehearsal of its code paths, not a check of a GPU" >&2
fi
tests_t0=$(date +%s)
if AFFECTSEQ_GPU_TESTS_ON="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_video.py >"$OUT/tests.log" 2>&1; then
    tests=passed
else
    tests=failed
fi
tests_s=$(($(date +%s) - tests_t0))
tail -3 "$OUT/tests.log" >&2

bench_t0=$(date +%s)
for backbone in ${BACKBONES//,/ }; do
    step "bench $backbone: $CLIPS clips, in flight $IN_FLIGHT, batch sizes $BATCHES"
    "$PY" bench/clips_in_flight.py --device "$DEVICE" --backbone "$backbone" --clips "$CLIPS" --in-flight "$IN_FLIGHT" \
        --batch-sizes "$BATCHES" --rounds "$ROUNDS" --json >"$OUT/bench-$backbone.log" 2>&1 || { tail -20 "$OUT/bench-$backbone.log" >&2; exit 1; }
    grep -v '^{' "$OUT/bench-$backbone.log" >&2
done
bench_s=$(($(date +%s) - bench_t0))

"$PY" - "$OUT" "$BACKBONES" "$tests" "$tests_s" "$bench_s" "$(($(date +%s) - start))" <<'EOF'
import json, sys
import torch, torchvision
out, names = sys.argv[1], sys.argv[2].split(",")
result = {"torch": torch.__version__, "torchvision": torchvision.__version__, "tests": sys.argv[3], "backbones": {}}
for name in names:
    bench = json.loads([line for line in open(f"{out}/bench-{name}.log") if line.startswith("{")][-1])
    best = bench["best"]
    result["device"] = bench["device"]
    result["backbones"][name] = {
        "weights": bench["weights"],
        "fps_end_to_end": best["fps"],
        "best_in_flight": best["in_flight"],
        "best_batch_size": best["batch_size"],
        "ceiling_fps": bench["ceiling_fps"],
        "vs_ceiling": best["vs_ceiling"],
        "serial_fps": bench["serial_fps"],
        "step_seconds_per_300_frames": bench["step_seconds_per_300_frames"],
        "decode_fps_by_threads": bench["decode_fps_by_threads"],
        "gpu_memory_gb": bench["gpu_memory_gb"],
        "runs": bench["runs"],
    }
result["seconds"] = {"tests": int(sys.argv[4]), "bench": int(sys.argv[5]), "total": int(sys.argv[6])}
print(json.dumps(result))
EOF
