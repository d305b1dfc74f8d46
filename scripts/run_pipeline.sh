#!/usr/bin/env bash
# The 4th-place pipeline on the real competition data, for a GPU machine: HPA segmentation ->
# 512 px 16-bit cells -> split -> seven EfficientNet-B0 checkpoints from three runs (BCE with -p,
# focal with -r, plain BCE) -> fine-tuning each on the relabelled validation cells -> infer.py
# with the three groups weighted 0.2 / 0.4 / 0.4 -> submission.csv. Every stage skips or resumes
# finished work, so the script can simply be run again after a crash.
#
# Usage: scripts/run_pipeline.sh [--dry-run] DATA OUT
#   DATA: the competition folder (train/, train.csv, test/, sample_submission.csv); optional
#         DATA/kaggle_2021.tsv adds public-HPA images as train-only extra data; optional
#         DATA/relabel/ holds manual relabel files ({class}.txt).
#   OUT:  where every stage writes (masks, dataset, models, finetuned, submission.csv).
#   --dry-run prints the commands instead of running them.
# Environment: EPOCHS (16), BATCH (32), WORKERS (all cores).
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
if [[ $# -ne 2 ]]; then
    echo "usage: $0 [--dry-run] DATA OUT" >&2
    exit 2
fi
data=$(realpath -m "$1")
out=$(realpath -m "$2")
if [[ ! -d "$data/train" || ! -f "$data/train.csv" ]]; then
    echo "error: $data has no train/ folder and train.csv (the competition's layout)" >&2
    exit 2
fi
epochs=${EPOCHS:-16}
batch=${BATCH:-32}
workers=${WORKERS:-$(nproc)}

run() {
    echo "+ $*"
    if [[ $dry_run -eq 0 ]]; then "$@"; fi
}

if [[ $dry_run -eq 0 ]]; then
    source "$(dirname "$0")/env.sh"
    mkdir -p "$out"
fi
cd "$(dirname "$0")/.."

relabel=()
if [[ -d "$data/relabel" ]]; then relabel=(--relabel "$data/relabel"); fi
extra=()
if [[ -f "$data/kaggle_2021.tsv" ]]; then
    run python download_publichpa.py -i "$data/kaggle_2021.tsv" -o "$out/publichpa" --workers 16
    run python segmentator.py -i "$out/publichpa" -n "$out/publichpa_nuclei" -c "$out/publichpa_cells" -b 128 \
        --workers "$workers"
    run python image_cutter.py -i "$out/publichpa" -m "$out/publichpa_cells" -o "$out/publichpa_dataset" \
        --labels "$out/publichpa/labels.csv" --workers "$workers"
    extra=(-e "$out/publichpa_dataset")
fi

run python segmentator.py -i "$data/train" -n "$out/train_nuclei" -c "$out/train_cells" -b 128 --workers "$workers"
run python image_cutter.py -i "$data/train" -m "$out/train_cells" -o "$out/dataset" --labels "$data/train.csv" \
    --workers "$workers"
run python data_loader.py -i "$out/dataset" "${extra[@]}"

common=(-i "$out/dataset" -s "$out/models" -b "$batch" --epochs "$epochs" --workers "$workers" --resume
        "${relabel[@]}")
run python train_me.py -c bce -n b0-bce -p "${common[@]}"
run python train_me.py -c focal -n b0-focal -r "${common[@]}"
run python train_me.py -c bce -n b0-plain "${common[@]}"

# The three groups: two late epochs of the -p run, four of the -r run, the plain run's last.
members=(b0-bce-12 b0-bce-13 b0-focal-12 b0-focal-13 b0-focal-14 b0-focal-15 "b0-plain-$epochs")
for member in "${members[@]}"; do
    run python finetuner.py -l "$out/models/$member.pt" -s "$out/finetuned" -b "$batch" --workers "$workers" \
        "${relabel[@]}"
done

ensemble="$out/ensemble.yaml"
echo "+ write $ensemble"
if [[ $dry_run -eq 0 ]]; then
    cat > "$ensemble" <<YAML
groups:
  - weight: 0.2
    members: [finetuned/b0-bce-12.pt, finetuned/b0-bce-13.pt]
  - weight: 0.4
    members: [finetuned/b0-focal-12.pt, finetuned/b0-focal-13.pt, finetuned/b0-focal-14.pt,
              finetuned/b0-focal-15.pt]
  - weight: 0.4
    members: [finetuned/b0-plain-$epochs.pt]
postprocessing: {cell_weight: 0.7, image_weight: 0.3, border_factor: true, outlier_factor: true}
YAML
fi
sample=()
if [[ -f "$data/sample_submission.csv" ]]; then sample=(--sample-submission "$data/sample_submission.csv"); fi
run python infer.py -i "$data/test" -e "$ensemble" -o "$out/submission.csv" "${sample[@]}" --workers "$workers"
