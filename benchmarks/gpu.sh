#!/usr/bin/env bash
# Every GPU benchmark of BENCHMARKS.md in one go, those not yet measured first, within a time budget.
#
#     bash benchmarks/gpu.sh OUT_DIR [SECONDS] [REFERENCE_CHECKOUT]
#
# Appends everything to OUT_DIR/gpu.log and prints each benchmark's last lines (its table) as it ends. No benchmark
# starts once SECONDS (default 3600) have passed, and each is cut at its own cap or at what is left of the budget,
# whichever comes first (killed 20 s after if it ignores the signal); a failing one does not stop the rest.
# REFERENCE_CHECKOUT (amazon-science/instruct-video-to-video) adds the reference sampler's comparison. PYTHON names
# the interpreter (default: python).
set -u
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [SECONDS] [REFERENCE_CHECKOUT]}
budget=${2:-3600}
reference=${3:-}
mkdir -p "$out"
log="$out/gpu.log"
py=${PYTHON:-python}
start=$(date +%s)
export PYTHONUNBUFFERED=1

run() {  # run NAME CAP_SECONDS COMMAND...
    local name=$1 cap=$2 left t0
    shift 2
    left=$((budget - ($(date +%s) - start)))
    if ((left < 30)); then
        echo "== $name: not run (budget spent)" | tee -a "$log"
        return
    fi
    ((cap > left)) && cap=$left
    echo "== $name (at most ${cap}s): $*" | tee -a "$log"
    t0=$(date +%s)
    timeout -k 20 "$cap" "$py" "$@" >"$out/step.log" 2>&1
    echo "== $name: exit $? after $(($(date +%s) - t0))s" >>"$out/step.log"
    cat "$out/step.log" >>"$log"
    tail -n 12 "$out/step.log"
    rm -f "$out/step.log"
}

{
    date -u
    git rev-parse HEAD 2>/dev/null
    timeout -k 5 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    timeout -k 5 120 "$py" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee -a "$log"

# Not yet measured first (BENCHMARKS.md names them), then the rows measured on 2026-12-04, to measure again.
if [[ -n $reference ]]; then
    run reference-sampler 180 benchmarks/reference_sampler.py --reference "$reference" --device cuda \
        --dtype float16 --parity
fi
run edit-bf16 240 benchmarks/edit.py --random-weights --sweep --device cuda --dtype bfloat16
run tav-paper 150 benchmarks/tav.py --sd --device cuda --dtype float16 --frames 24 --size 512 --steps 500
run edit-compiled 420 benchmarks/edit.py --random-weights --sweep --device cuda --dtype float16 \
    --compile max-autotune
run synth-modelscope 150 benchmarks/synth.py --modelscope --device cuda --dtype float16 --compare
run train-step-real 180 benchmarks/train_step.py --real --device cuda
run edit-fp16 240 benchmarks/edit.py --random-weights --sweep --device cuda --dtype float16
run edit-offload 240 benchmarks/edit.py --random-weights --sweep --device cuda --dtype float16 --offload \
    --vae-tiling
run tav-space 120 benchmarks/tav.py --sd --device cuda --dtype float16 --frames 8 --size 512 --steps 300
echo "== done after $(($(date +%s) - start))s" | tee -a "$log"
