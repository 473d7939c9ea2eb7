#!/usr/bin/env bash
# The GPU-node check, one script for a machine with a GPU; prints one table (step, result, seconds, detail).
#   1. install   a fresh copy of the repository, set up with the README's command (`make venv`): torch from
#                PyPI (a CUDA build), mmcv built with CUDA hidden (CPU ops), the pins, the kernel
#   2. cuda-tests the tests that need CUDA (AMP on CUDA, ...), with the environment of step 1 (or PY)
#   3. pipeline  01..05 through papermill on generated 1024x1024 data prepared at 512x512, the seed's
#                model for a few iterations: bf16 AMP and channels-last (amp/channels_last "auto") and
#                evaluation on CUDA, each checked from the run's files
#   4. benchmark benchmarks/train_step.py (ms/step, images/s: fp32 vs AMP vs AMP channels-last) and
#                benchmarks/train.py's 512 training rows
# Each step has its own time limit (seconds, the *_S variables below): 9 minutes in all at most.
#
#   bash benchmarks/gpu_check.sh                      # on the GPU node, from the repository root
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh  # the same steps on a CPU at toy sizes, no install
# PY=/path/to/python skips nothing but makes steps 2-4 use that Python when the install fails (an
# air-gapped node: see benchmarks/offline_install.sh). Results and logs stay in SCRATCH (printed at the end).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
SCRATCH=${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
INSTALL_S=${INSTALL_S:-210}   # 1. fresh install
TESTS_S=${TESTS_S:-60}        # 2. CUDA tests
PIPELINE_S=${PIPELINE_S:-150} # 3. 512 pipeline through papermill
BENCH_S=${BENCH_S:-60}        # 4. each of the two benchmarks
if [ "$DRY_RUN" = 1 ]; then
  RAW_SIZE=128; SIZE=64; CONFIG=demo_unet-s5-d16-c16_ce-dice_128x128; ITERS=4; N_TRAIN=24; N_TEST=8
else
  RAW_SIZE=1024; SIZE=512; CONFIG=fcn-unet-s5-d16_unet_1xb16-0.01-20k_pneumothorax-512x512; ITERS=40; N_TRAIN=48; N_TEST=16
fi
mkdir -p "$SCRATCH/logs"
ROWS=()

row() {  # step, result, seconds, detail
  ROWS+=("$(printf '| %-10s | %-7s | %7s | %s |' "$1" "$2" "$3" "$4")")
}

timed() {  # step, limit_s, log, command...: run with a time limit, record PASS/FAIL/TIMEOUT and seconds
  local step=$1 limit=$2 log=$3; shift 3
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  LAST_S=$((SECONDS - start))
  if [ $rc -eq 0 ]; then LAST=PASS; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then LAST=TIMEOUT; else LAST=FAIL; fi
  echo "[$step] $LAST in ${LAST_S}s (limit ${limit}s), log: $log" >&2
}

# 0. the machine
if command -v nvidia-smi >/dev/null; then
  GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
else
  GPU="no nvidia-smi"
fi
row machine info 0 "$GPU; $(nproc) CPUs"

# 1. fresh install: a copy of the repository without its environment, outputs or data, then `make venv`
if [ "$DRY_RUN" = 1 ]; then
  row install skipped 0 "dry run: uses ${PY:-$REPO/.venv/bin/python}"
  PY=${PY:-$REPO/.venv/bin/python}
else
  mkdir -p "$SCRATCH/clone"
  tar -C "$REPO" --exclude=./.venv --exclude=./outputs --exclude=./data/raw --exclude=./data/demo \
      --exclude=./data/prepared --exclude=./.git -cf - . | tar -C "$SCRATCH/clone" -xf -
  timed install "$INSTALL_S" "$SCRATCH/logs/install.log" make -C "$SCRATCH/clone" venv
  if [ "$LAST" = PASS ]; then
    PY=$SCRATCH/clone/.venv/bin/python
    CUDA=$("$PY" -c "import torch, mmcv.ops, mmseg.models; print(torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1 | tail -1)
    row install PASS "$LAST_S" "make venv; $CUDA"
  else
    row install "$LAST" "$LAST_S" "make venv: $(tail -1 "$SCRATCH/logs/install.log" | cut -c1-120)"
    PY=${PY:-$REPO/.venv/bin/python}
  fi
fi
if ! "$PY" -c "import torch, mmseg.models" >/dev/null 2>&1; then
  row python FAIL 0 "$PY cannot import torch and mmseg: steps 2-4 not run"
  printf '%s\n' "| step       | result  | seconds | detail |" "| --- | --- | ---: | --- |" "${ROWS[@]}"
  exit 1
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
cd "$REPO" || exit 1

# 2. the tests that need CUDA (they skip on a CPU)
timed cuda-tests "$TESTS_S" "$SCRATCH/logs/cuda-tests.log" "$PY" -m pytest -q -p no:cacheprovider -k "cuda" tests/
row cuda-tests "$LAST" "$LAST_S" "$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$SCRATCH/logs/cuda-tests.log" | tail -1)"

# 3. the pipeline at 512 on generated 1024x1024 data, through papermill (python -m helpers pipeline)
P=$SCRATCH/params
mkdir -p "$P"
cat >"$P/shared.yaml" <<EOF
raw_root: $SCRATCH/demo
prepared_root: $SCRATCH/prepared/patient-$SIZE
EOF
cat >"$P/01_explore.yaml" <<EOF
max_images: 0
EOF
cat >"$P/02_prepare.yaml" <<EOF
img_size: $SIZE
EOF
cat >"$P/03_train.yaml" <<EOF
lrs: [0.01]
config: $CONFIG
img_size: $SIZE
batch_size: 8
max_iters: $ITERS
val_interval: $((ITERS / 2))
amp: auto
channels_last: auto
EOF
cat >"$P/04_evaluate.yaml" <<EOF
split: test
batch_size: 8
n_boot: 100
EOF
cat >"$P/05_visualize.yaml" <<EOF
split: test
n_examples: 2
EOF
timed pipeline "$PIPELINE_S" "$SCRATCH/logs/pipeline.log" bash -c \
  '"$1" -m helpers demo-data --dest "$2/demo" --n-train "$3" --n-test "$4" --size "$5" &&
   "$1" -m helpers pipeline --params-dir "$2/params" --outputs "$2/outputs"' \
  _ "$PY" "$SCRATCH" "$N_TRAIN" "$N_TEST" "$RAW_SIZE"
DETAIL=$("$PY" - "$CONFIG" "$SCRATCH/outputs" <<'EOF' 2>&1 | tail -1
import json, sys
from pathlib import Path
from helpers import runs
outputs = Path(sys.argv[2])
run = runs.run_dir(sys.argv[1], 0.01, outputs)
manifest, metrics = runs.read_manifest(run), runs.read_metrics(run)
config = (run / runs.CONFIG_FILE).read_text()
evals = [json.loads((p / runs.EVAL_INFO_FILE).read_text()) for p in runs.evaluations(outputs, "test")]
print(f"amp={manifest['amp']} channels_last={'ChannelsLastHook' in config} "
      f"device={manifest['device'].get('gpus') or 'cpu'} train img/s={metrics['images_per_s']:.1f} "
      f"eval on={sorted({e['device'] for e in evals})} index.html={(outputs / 'index.html').exists()}")
EOF
)
row pipeline "$LAST" "$LAST_S" "$DETAIL"

# 4. throughput
timed train-step "$BENCH_S" "$SCRATCH/logs/train_step.log" "$PY" benchmarks/train_step.py --steps 20 --warmup 5 \
  $([ "$DRY_RUN" = 1 ] && echo "--skip-gpu --steps 3 --warmup 1")
row train-step "$LAST" "$LAST_S" "see the table below"
timed train-bench "$BENCH_S" "$SCRATCH/logs/train.log" "$PY" benchmarks/train.py --images 32 --iters 20 --warmup 5 \
  --skip-loader $([ "$DRY_RUN" = 1 ] && echo "--skip-gpu --raw-size 128 --cpu-size 64 --cpu-iters 3 --warmup 1")
row train-bench "$LAST" "$LAST_S" "see the table below"

echo
KIND=GPU; [ "$DRY_RUN" = 1 ] && KIND="CPU dry run"
echo "GPU check ($KIND); logs in $SCRATCH/logs"
printf '%s\n' "| step       | result  | seconds | detail |" "| --- | --- | ---: | --- |" "${ROWS[@]}"
echo; echo "benchmarks/train_step.py:"; sed -n '/^variant /,$p' "$SCRATCH/logs/train_step.log"
echo; echo "benchmarks/train.py:"; sed -n '/^part /,$p' "$SCRATCH/logs/train.log"
