#!/usr/bin/env bash
# The GPU figures of the issues, in one short run on a CUDA machine:
#   training speed and peak GPU memory at the paper's LA setting (mixed precision and fp32)
#   with activation checkpointing at 0, 2 (the default) and 5 levels beside the CPU estimate
#   (`bench memory`), the authors' code timed in the same run where its checkout is at hand,
#   S for scale, sliding-window speed, and the demo end to end on CUDA.
# Usage: OUT=/some/folder bash scripts/gpu_check.sh   (writes logs and pictures to $OUT)
# STEP_SECONDS (240) limits each step; ACC_SECONDS (0: skipped) runs accuracy cells for that
# long; ONLY_ACC=1 runs nothing else (a second call: ONLY_ACC=1 ACC_SECONDS=560 bash ...).
# The authors' code: copy ../shared/anchor to .anchor/ and their checkout (the folder with
# code/) to .ref/ (both git-ignored) and carry them to the device machine; or set ANCHOR
# and GENERICSSL_REF.
set -u
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# A bare device machine: wheels carried in .whl/ (monai, nibabel) for what its image lacks,
# and the source tree itself when genericssl is not installed.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import genericssl" 2>/dev/null || export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
G="python3 -m genericssl.cli"
# One step that hangs or crawls must not eat the machine's lease: each has its own limit.
T() { timeout "${STEP_SECONDS:-240}" "$@"; }
ANCHOR=${ANCHOR:-.anchor/anchor_bench.py}
REF=${GENERICSSL_REF:-.ref}
HAVE_REF=0; [ -f "$ANCHOR" ] && [ -d "$REF/code" ] && HAVE_REF=1
if [ "${ONLY_ACC:-0}" != 1 ]; then
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
# Issue 17: LA peak GPU memory and time with 2 (default), 0 and 5 checkpointed levels; the
# CPU estimate of the same (`genericssl bench memory -t la_0.05 --levels 0 2 5`) is in the README.
T $G bench train --preset LA --device cuda --iters 5
T $G bench train --preset LA --device cuda --iters 5 --checkpoint-levels 0
T $G bench train --preset LA --device cuda --iters 3 --checkpoint-levels 5
if [ "$HAVE_REF" = 1 ]; then
    T python3 "$ANCHOR" --ref "$REF" --device cuda --config P --iters 5
    T python3 "$ANCHOR" --ref "$REF" --device cuda --config S --iters 5
else
    echo "authors' code not found ($ANCHOR, $REF/code): their CUDA timing skipped"
fi
T $G bench train --preset S --device cuda --iters 5
T $G bench train --preset LA --device cuda --iters 3 --no-amp
T $G bench train --preset LA --device cuda --iters 5 --method supervised
T $G bench infer --device cuda --stride-xy 64 --stride-z 16 --batch-windows 8
[ "$HAVE_REF" = 1 ] && T python3 "$ANCHOR" --ref "$REF" --device cuda --infer --speeds 1
T $G bench infer --device cuda --stride-xy 16 --stride-z 4 --batch-windows 8
T $G bench infer --device cuda --mode whole
[ -n "${MEMORY_ESTIMATE:-}" ] && T $G bench memory -t la_0.05 --levels 0 2 5
# Several GPUs: time per iteration in 1 and in NGPU processes (DDP, NCCL, SyncBN), scaling efficiency.
NGPU=$(nvidia-smi -L | wc -l)
[ "$NGPU" -gt 1 ] && T $G bench train --preset LA --device cuda --iters 5 --nproc "$NGPU"
[ "$NGPU" -gt 1 ] && T $G bench train --preset LA --device cuda --iters 5 --nproc "$NGPU" --sync-bn off
# torchrun end to end (one rank on a one-GPU machine): 1 epoch of A&D on the synthetic demo task.
$G prepare synthetic --setting demo --out "$OUT/syn" --size 48
T torchrun --standalone --nproc-per-node "$NGPU" -m genericssl train --config "$OUT/syn/task.yaml" \
    --out "$OUT/syn/run" --device cuda --set max_epoch=1 --no-progress
tail -n 2 "$OUT/syn/run/history.jsonl"
rm -rf "$OUT/syn"
} 2>&1 | tee "$OUT/bench.log"
T $G demo --device cuda --out "$OUT/demo" --no-progress 2>&1 | tee "$OUT/demo.log"
cp "$OUT/demo/results.json" "$OUT/demo_results.json" 2>/dev/null
cp "$OUT/demo/overlays.png" "$OUT/demo_overlays.png" 2>/dev/null
cp "$OUT/demo/curves.png" "$OUT/demo_curves.png" 2>/dev/null
rm -rf "$OUT/demo"
fi
# The synthetic accuracy benchmark (calibration phase by default), as far as ACC_SECONDS allows
# (0: skipped); finished cells are cached (keyed by code version), so the tarball resumes
# elsewhere. Its cells are tiny (8 filters, 32^3): they ran at 145-180 s per 1000-iteration
# supervised cell on the H200 machine's 16 CPU cores, one per core; the budget is now 3000
# iterations (calibration, docs/benchmark.md), so a cell needs ~8-9 minutes there: give the
# step a call of its own. On the GPU untested.
ACC_SECONDS=${ACC_SECONDS:-0}
if [ "$ACC_SECONDS" -gt 0 ]; then
    timeout "$ACC_SECONDS" $G bench accuracy --device "${ACC_DEVICE:-cpu}" --jobs "${ACC_JOBS:-$(nproc)}" \
        --threads 1 --out "$OUT/acc" ${ACC_ARGS:---phase calibration} 2>&1 | tee "$OUT/acc.log"
    (cd "$OUT" && tar czf acc.tar.gz acc/cells $(ls -d acc/results* acc/*.png 2>/dev/null))
    rm -rf "$OUT/acc"
fi
ls -la "$OUT"
