#!/usr/bin/env bash
# Train a FOMM model from scratch in one short GPU slot, evaluate it, write everything to $OUT.
#
#   OUT=/tmp/fomm scripts/fomm_gpu.sh                       # on a CUDA machine, repo root
#   DEVICE=cpu STEPS=5 CONFIG=tiny SIZE=64 OUT=/tmp/f scripts/fomm_gpu.sh   # the CPU check
#
# Steps: (1) crop the development clips (splits/dev_v1.json: train and validation people) into
# a frame cache, (2) `keyface train fit --task fomm` for MINUTES of wall time (or STEPS steps,
# whichever comes first; --amp on CUDA), (3) `keyface train eval-fomm`: reconstruction L1 and
# LPIPS on fixed pairs of the validation people, against the source frame unwarped, (4) codes
# one validation clip with `keyface encode --motion fomm --model`. Results under $OUT:
# model.safetensors (+ .sha256), log.jsonl, config.json, eval.json, encode.txt, timings.txt.
# A RUN folder that holds a checkpoint is continued (RUN=/path/of/an/earlier/run).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-fomm_out}
CLIPS=${CLIPS:-../shared/data/clips/MANIFEST.tsv}
SPLIT=${SPLIT:-splits/dev_v1.json}
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-small}      # tiny | small | vox256
SIZE=${SIZE:-128}
BATCH=${BATCH:-16}
STEPS=${STEPS:-1000000}
MINUTES=${MINUTES:-8}
WORKERS=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
CACHE=${CACHE:-$OUT/cache}
RUN=${RUN:-$OUT/run}
PAIRS=${PAIRS:-64}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
kf() { "$PYTHON" -m keyface "$@"; }

mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - t0 )) s" | tee -a "$OUT/timings.txt"; }
: > "$OUT/timings.txt"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"

# Cache at the training size (a 128 cache also serves --size 64; 256 needs its own).
kf train prepare --task fomm --clips "$CLIPS" --split "$SPLIT" --out "$CACHE" \
    --size "$SIZE" --max-frames 300 --stride 3 --workers "$WORKERS" -q
stamp prepared

AMP=()
if [ "${DEVICE%%:*}" = cuda ]; then AMP=(--amp); fi
kf train fit --task fomm --data "$CACHE" --split "$SPLIT" --run "$RUN" --config "$CONFIG" \
    --size "$SIZE" --batch "$BATCH" --steps "$STEPS" --minutes "$MINUTES" \
    --device "$DEVICE" "${AMP[@]}" --checkpoint-every 200 --val-every 500 -q \
    2> >(tee "$OUT/fit.txt" >&2)
stamp trained

cp "$RUN/model.safetensors" "$RUN/log.jsonl" "$RUN/config.json" "$OUT/" 2>/dev/null || true
sha256sum "$OUT/model.safetensors" | tee "$OUT/model.safetensors.sha256"

kf train eval-fomm --model "$OUT/model.safetensors" --data "$CACHE" --split "$SPLIT" \
    --pairs "$PAIRS" --json "$OUT/eval.json" | tee "$OUT/eval.txt"
stamp evaluated

CLIP=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['validation_clips'][0])" \
    "$SPLIT")
kf encode "$(dirname "$CLIPS")/$CLIP" -o "$OUT/val.kf" --motion fomm \
    --model "$OUT/model.safetensors" --max-frames 60 -q -y | tee "$OUT/encode.txt"
kf info "$OUT/val.kf" >> "$OUT/encode.txt"
stamp coded
echo "results in $OUT"
