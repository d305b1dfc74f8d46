#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the repository root, with .whl/ carried (bench/gpu/prepare.sh):
#   bash bench/gpu/run.sh [tests] [SECTION...] [-- measure.py flags]
# Installs the carried wheels, prints the machine, runs every CUDA test (pytest -m cuda), then
# the benchmarks of bench/gpu/measure.py (networks, segmentator, training, inference), and prints
# one table last. With no arguments: tests and every section. Logs and the results file go to
# $OUT when set (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/hpasc-gpu-out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: installing the carried wheels failed (run bench/gpu/prepare.sh here first)" >&2; exit 2; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
steps=() flags=()
while (($#)); do
    if [[ $1 == -- ]]; then shift; flags=("$@"); break; fi
    steps+=("$1"); shift
done
((${#steps[@]})) || steps=(tests networks segmentator training inference)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
echo "CPU cores: $(nproc)"
results="$out/results.jsonl"
rm -f "$results"
sections=()
for step in "${steps[@]}"; do
    if [[ $step == tests ]]; then
        start=$SECONDS
        python3 -m pytest -m cuda -q -p no:cacheprovider tests 2>&1 | tee "$out/pytest-cuda.log"
        status=${PIPESTATUS[0]}
        summary=$(tail -1 "$out/pytest-cuda.log" | tr -d '=' | sed 's/^ *//')
        python3 - "$results" "$summary" "$status" "$((SECONDS - start))" <<'PY'
import json, sys
path, summary, status, seconds = sys.argv[1:]
with open(path, "a") as file:
    file.write(json.dumps({"section": "tests", "what": "pytest -m cuda: " + summary, "value": int(status),
                           "unit": "exit", "note": f"{seconds} s"}) + "\n")
PY
    else
        sections+=("$step")
    fi
done
if ((${#sections[@]})); then
    python3 bench/gpu/measure.py "${sections[@]}" --results "$results" "${flags[@]}" 2>&1 | tee "$out/measure.log"
fi
python3 bench/gpu/measure.py --table "$results"
