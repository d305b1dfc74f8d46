#!/usr/bin/env bash
# The 4th-place pipeline on the real competition data, for a GPU machine: HPA segmentation ->
# 16-bit cell tiles -> split -> three EfficientNet-B0 runs (BCE with -p, focal with -r, plain BCE)
# -> fine-tuning seven of their checkpoints on the relabelled validation cells -> infer.py with the
# three groups weighted 0.2 / 0.4 / 0.4 -> submission.csv. Every stage skips or resumes finished
# work, so the script can simply be run again after a crash.
#
# Usage: scripts/run_pipeline.sh [options] DATA OUT
#   DATA: the competition folder (train/, train.csv, test/, sample_submission.csv); optional
#         DATA/kaggle_2021.tsv adds public-HPA images as train-only extra data.
#   OUT:  where every stage writes (masks, dataset, models, finetuned, ensemble.yaml, submission.csv).
# Options (environment variables EPOCHS, BATCH, WORKERS give the first three's defaults):
#   --epochs E      epochs per run (16). The ensemble takes, as the 4th place did with 16, epochs
#                   E-4 and E-3 of the -p run, E-4..E-1 of the -r run and E of the plain run
#                   (clamped to 1..E, repeats dropped).
#   --batch B       cells per batch (32)
#   --workers W     worker processes (all cores)
#   --folds N       folds of the split (5; fold 0 validates)
#   --tile-size S   tile side of the cell dataset (512)
#   --labels DIR    relabel folder: SPEC {class}.txt files or the 4th place's published folder
#                   (default: DATA/relabel when present)
#   --dry-run       print the commands and check that every file a step needs exists or is made
#                   by an earlier step; run nothing
set -euo pipefail

usage="usage: $0 [--epochs E] [--batch B] [--workers W] [--folds N] [--tile-size S] [--labels DIR] [--dry-run] DATA OUT"
die() { echo "error: $*" >&2; exit 2; }
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

dry_run=0 epochs=${EPOCHS:-16} batch=${BATCH:-32} workers=${WORKERS:-$(nproc)} folds=5 tile=512 labels=""
positional=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) dry_run=1; shift ;;
        --epochs | --batch | --workers | --folds | --tile-size | --labels)
            [[ $# -ge 2 ]] || die "$1 needs a value; $usage"
            case $1 in
                --epochs) epochs=$2 ;; --batch) batch=$2 ;; --workers) workers=$2 ;; --folds) folds=$2 ;;
                --tile-size) tile=$2 ;; --labels) labels=$2 ;;
            esac
            shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1; $usage" ;;
        *) positional+=("$1"); shift ;;
    esac
done
[[ ${#positional[@]} -eq 2 ]] || die "DATA and OUT are needed; $usage"
for pair in "--epochs $epochs" "--batch $batch" "--workers $workers" "--folds $folds" "--tile-size $tile"; do
    positive $pair
done
[[ $folds -ge 2 ]] || die "--folds needs at least 2, got $folds"
data=$(realpath -m "${positional[0]}")
out=$(realpath -m "${positional[1]}")
[[ -d "$data/train" && -f "$data/train.csv" ]] || die "$data has no train/ folder and train.csv (the competition's layout)"
if [[ -z "$labels" && -d "$data/relabel" ]]; then labels="$data/relabel"; fi
if [[ -n "$labels" ]]; then
    labels=$(realpath -m "$labels")
    [[ -d "$labels" ]] || die "--labels $labels: no such folder"
fi

# What each step needs must exist already or be made by an earlier step: checked before any
# step runs, so a missing file stops the chain at once rather than after days of training.
declare -A made=()
missing=0
makes() { local path; for path; do made["$path"]=1; done; }
needs() {
    local path
    for path; do
        if [[ ! -e "$path" && -z "${made[$path]:-}" ]]; then
            echo "error: $path is needed (by: $step) and no earlier step makes it" >&2
            missing=1
        fi
    done
}
plan=()
step() { step=$(printf '%q ' "$@"); step=${step% }; plan+=("$step"); }

relabel=()
if [[ -n "$labels" ]]; then relabel=(--relabel "$labels"); fi
extra=()
if [[ -f "$data/kaggle_2021.tsv" ]]; then
    step python download_publichpa.py -i "$data/kaggle_2021.tsv" -o "$out/publichpa" --workers 16
    makes "$out/publichpa" "$out/publichpa/labels.csv"
    step python segmentator.py -i "$out/publichpa" -n "$out/publichpa_nuclei" -c "$out/publichpa_cells" -b 128 \
        --workers "$workers"
    needs "$out/publichpa"; makes "$out/publichpa_cells"
    step python image_cutter.py -i "$out/publichpa" -m "$out/publichpa_cells" -o "$out/publichpa_dataset" \
        --labels "$out/publichpa/labels.csv" --size "$tile" --workers "$workers"
    needs "$out/publichpa_cells" "$out/publichpa/labels.csv"; makes "$out/publichpa_dataset"
    extra=(-e "$out/publichpa_dataset")
fi

step python segmentator.py -i "$data/train" -n "$out/train_nuclei" -c "$out/train_cells" -b 128 --workers "$workers"
makes "$out/train_cells"
step python image_cutter.py -i "$data/train" -m "$out/train_cells" -o "$out/dataset" --labels "$data/train.csv" \
    --size "$tile" --workers "$workers"
needs "$out/train_cells"; makes "$out/dataset"
step python data_loader.py -i "$out/dataset" --folds "$folds" "${extra[@]}"
needs "$out/dataset" "${extra[@]:1}"

common=(-i "$out/dataset" -s "$out/models" -b "$batch" --epochs "$epochs" --workers "$workers" --resume
        "${relabel[@]}")
for run in "bce b0-bce -p" "focal b0-focal -r" "bce b0-plain"; do
    read -r loss name flag <<<"$run"
    step python train_me.py -c "$loss" -n "$name" ${flag:+"$flag"} "${common[@]}"
    needs "$out/dataset"
    for ((e = 1; e <= epochs; e++)); do makes "$out/models/$name-$e.pt"; done
done

# The epochs of a run the ensemble takes: offsets from the last epoch, clamped to 1..E, once each.
epochs_of() {
    local offset chosen=() e
    for offset; do
        e=$((epochs - offset)); ((e >= 1)) || e=1
        [[ " ${chosen[*]} " == *" $e "* ]] || chosen+=("$e")
    done
    echo "${chosen[@]}"
}
group_p=() group_r=()
for e in $(epochs_of 4 3); do group_p+=("b0-bce-$e"); done
for e in $(epochs_of 4 3 2 1); do group_r+=("b0-focal-$e"); done
group_plain=("b0-plain-$epochs")
for member in "${group_p[@]}" "${group_r[@]}" "${group_plain[@]}"; do
    step python finetuner.py -l "$out/models/$member.pt" -s "$out/finetuned" -b "$batch" --workers "$workers" \
        "${relabel[@]}"
    needs "$out/models/$member.pt"; makes "$out/finetuned/$member.pt"
done

ensemble="$out/ensemble.yaml"
yaml_list() { local first=1 m; printf '['; for m; do ((first)) || printf ', '; printf 'finetuned/%s.pt' "$m"; first=0; done; printf ']'; }
step write "$ensemble"
for member in "${group_p[@]}" "${group_r[@]}" "${group_plain[@]}"; do needs "$out/finetuned/$member.pt"; done
makes "$ensemble"
sample=()
if [[ -f "$data/sample_submission.csv" ]]; then sample=(--sample-submission "$data/sample_submission.csv"); fi
step python infer.py -i "$data/test" -e "$ensemble" -o "$out/submission.csv" "${sample[@]}" --workers "$workers" --overwrite
needs "$data/test" "$ensemble"

for command in "${plan[@]}"; do echo "+ $command"; done

# Which segmentation the chain will make (auto: HPA's networks when their weights are in the cache,
# else the classical backend), and whether the labels' cell ids were made on other masks: training
# would refuse them after hours of segmentation and cutting.
segmentation_check() {
    python - "$labels" <<'PY'
import sys
from pathlib import Path

from hpasc.labels.formats import label_format
from hpasc.segmentation.settings import ModelFiles

files = ModelFiles()
backend = "hpa" if files.available() else "classical"
why = f"HPA's weights are in {files.cache}" if backend == "hpa" else \
    f"HPA's weights are not in {files.cache}; hpasc-segment --backend hpa downloads them"
print(f"segmentation: the {backend} backend ({why})")
if sys.argv[1]:
    folder = Path(sys.argv[1])
    made_on = label_format(folder).made_on(folder)
    if made_on is not None and made_on.backend not in (backend, "unknown"):
        print(f"error: the labels of {folder} name cells of {made_on.describe()}, but the chain segments with the "
              f"{backend} backend: training would refuse them; get HPA's weights first", file=sys.stderr)
        sys.exit(2)
PY
}
if python -c 'import hpasc.labels.formats, hpasc.segmentation.settings' 2>/dev/null; then
    segmentation_check || missing=1
else
    echo "segmentation: decided when the chain runs (hpasc is not installed in this Python)"
fi
((missing == 0)) || exit 2
((dry_run == 0)) || exit 0

source "$(dirname "$0")/env.sh"
mkdir -p "$out"
cd "$(dirname "$0")/.."
echo "== running ${#plan[@]} steps"
for command in "${plan[@]}"; do
    echo "== $command"
    if [[ $command == write* ]]; then
        cat > "$ensemble" <<YAML
groups:
  - weight: 0.2
    members: $(yaml_list "${group_p[@]}")
  - weight: 0.4
    members: $(yaml_list "${group_r[@]}")
  - weight: 0.4
    members: $(yaml_list "${group_plain[@]}")
postprocessing: {cell_weight: 0.7, image_weight: 0.3, border_factor: true, outlier_factor: true}
YAML
    else
        eval "$command"
    fi
done
