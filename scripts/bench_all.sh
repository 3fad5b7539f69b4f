#!/usr/bin/env bash
# Every wgrpo benchmark, one after another, on the adapter `wgrpo devices` picks (or $WGRPO_DEVICE): each table is
# printed as it goes and each JSON report kept in DIR. PyTorch's side (--model, --generate, --grpo --trl) runs on
# $TORCH_DEVICE (default auto: the CUDA card when torch sees one, else the CPU). Goes on past a failure and exits 1
# at the end if any benchmark failed.
#   scripts/bench_all.sh [DIR]                       DIR defaults to ./bench-results
#   PYTHON=.venv/bin/python scripts/bench_all.sh     any interpreter with wgrpo installed (default python3)
#   BENCH_QUICK=1 scripts/bench_all.sh /tmp/smoke    --quick and tiny shapes: a smoke test of the whole run
out=${1:-./bench-results}
mkdir -p "$out" || exit 1
wgrpo() { "${PYTHON:-python3}" -m wgrpo.tools.cli "$@"; }

# SmolLM2-135M's shape, one sequence of 128 tokens
model=(--architecture llama --vocab-size 49152 --hidden-size 576 --num-layers 30 --num-heads 9 --num-kv-heads 3
       --intermediate-size 1536 --tie-word-embeddings --batch-size 1 --seq-len 128)
grpo=()  # --grpo's own default model (its head must be untied)
quick=()
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    tiny=(--hidden-size 32 --num-layers 2 --num-heads 4 --num-kv-heads 2 --intermediate-size 48)
    model=(--architecture llama --vocab-size 64 "${tiny[@]}" --tie-word-embeddings --batch-size 2 --seq-len 8)
    grpo=("${tiny[@]}")
    quick=(--quick)
fi
torch=(--torch-device "${TORCH_DEVICE:-auto}")

failed=()
run() {  # run NAME ARGS...: one benchmark, its report in $out/NAME.json
    local name=$1
    shift
    echo "=== $name: wgrpo $* ${quick[*]} --json $out/$name.json"
    wgrpo "$@" "${quick[@]}" --json "$out/$name.json" || failed+=("$name")
    echo
}

echo "=== devices"
wgrpo devices || failed+=(devices)
wgrpo devices --json >"$out/devices.json" || failed+=(devices-json)
echo
run kernels bench
run autotune bench --autotune "${model[@]}"  # first: the tuned variants are cached for the runs below
run model bench --model "${model[@]}" "${torch[@]}"
run generate bench --generate "${model[@]}" --gen-batch-sizes 8 --gen-tokens 256 "${torch[@]}"
run grpo-trl bench --grpo --trl "${grpo[@]}" "${torch[@]}"

if [ ${#failed[@]} -gt 0 ]; then
    echo "bench_all: failed: ${failed[*]} (reports in $out)" >&2
    exit 1
fi
echo "bench_all: every benchmark ran; reports in $out"
