#!/usr/bin/env bash
# The pipeline end to end on built-in synthetic demo data (sets up the virtual environment first).
# Today's chain: synthetic HPA-like images -> an offline public-HPA mirror (file:// URLs) ->
# download_publichpa.py -> segmentator.py (HPA's networks when their weights are cached, else the
# classical backend) -> agreement of the cell masks with the synthetic truth -> image_cutter.py
# (128 px tiles, to keep the demo quick on a CPU) -> data_loader.py -> a few cells exported as
# PNGs -> train_me.py (a short CPU run at 64 px, from scratch: no ImageNet weights offline) -> its
# cell-level mAP against the synthetic truth -> negative pseudo-labels -> finetuner.py -> infer.py
# on new synthetic test images with an ensemble of the trained and fine-tuned checkpoints (the cells
# as AnnData, cells.h5ad, and a report with a UMAP map of them) -> the competition metric against
# their truth (the last line: mAP).
# Usage: ./scripts/demo.sh [OUT]   (default: demo_out/ in the repository; a re-run skips done work)
set -euo pipefail
usage="usage: ./scripts/demo.sh [OUT]   (the output folder; default: demo_out/ in the repository)"
case "${1:-}" in
    -h|--help) echo "$usage"; sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1; $usage" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "error: one output folder at most; $usage" >&2; exit 2; }
out=$(realpath -m "${1:-$(dirname "$0")/../demo_out}")
source "$(dirname "$0")/env.sh"
cd "$hpasc_root"

echo "== 1. synthetic images with ground truth -> $out/synthetic"
python -m hpasc.commands.synthetic -o "$out/synthetic" -n 80 --size 1024 --seed 0
echo "== 2. a public-HPA-style mirror of them (.tif.gz + kaggle_2021.tsv) -> $out/mirror"
python -m hpasc.commands.mirror -i "$out/synthetic" -o "$out/mirror"
echo "== 3. download_publichpa.py from the mirror -> $out/publichpa"
python download_publichpa.py -i "$out/mirror/kaggle_2021.tsv" -o "$out/publichpa"

echo "== 4. segmentator.py -> $out/cells, $out/nuclei"
python segmentator.py -i "$out/publichpa" -c "$out/cells" -n "$out/nuclei"
echo "== 5. agreement of the cell masks with the synthetic truth (F1 of cells at IoU >= 0.6)"
python -m hpasc.commands.agreement --truth "$out/synthetic/truth" --pred "$out/cells" --worst 3
echo "== 6. image_cutter.py -> $out/dataset"
python image_cutter.py -i "$out/publichpa" -m "$out/cells" -n "$out/nuclei" -o "$out/dataset" --size 128
echo "== 7. data_loader.py (5 folds, validation fold 0) -> $out/dataset/split"
python data_loader.py -i "$out/dataset"
echo "== 8. a few cells as viewable PNGs -> $out/cells_png"
python -m hpasc.commands.cellstore export --dataset "$out/dataset" --limit 6 --out "$out/cells_png"
echo "== 9. train_me.py: EfficientNet-B0, BCE, -p augmentation; a short CPU run at 64 px -> $out/models"
python train_me.py -i "$out/dataset" -s "$out/models" -n b0-bce -c bce -b 32 -p --tile-size 64 \
    --epochs 8 --epoch-size 2000 --lr 1e-3 --pretrained none --resume
echo "== 10. cell-level mAP of the last checkpoint (epoch 8: a fixed epoch, as the 4th place's ensembles took, not"
echo "   the best validation epoch that training names) on the validation cells (synthetic cell truth)"
python -m hpasc.commands.cell_eval --checkpoint "$out/models/b0-bce-8.pt" --dataset "$out/dataset" \
    --truth "$out/synthetic/truth/cells.csv"
echo "== 11. negative pseudo-labels from that checkpoint -> $out/pseudo"
python -m hpasc.commands.pseudo_label --checkpoint "$out/models/b0-bce-8.pt" --dataset "$out/dataset" \
    --out "$out/pseudo" --overwrite
echo "== 12. finetuner.py: one pass over the validation cells -> $out/finetuned"
python finetuner.py -l "$out/models/b0-bce-8.pt" -s "$out/finetuned" -b 32 --pseudo "$out/pseudo"
echo "== 13. new synthetic test images with ground truth -> $out/test"
python -m hpasc.commands.synthetic -o "$out/test" -n 12 --size 1024 --seed 1
cat > "$out/ensemble.yaml" <<'YAML'
groups:
  - weight: 0.5
    members: [{checkpoint: models/b0-bce-8.pt}]
  - weight: 0.5
    members: [{checkpoint: finetuned/b0-bce-8.pt}]
postprocessing: {cell_weight: 0.7, image_weight: 0.3, border_factor: true, outlier_factor: true}
YAML
echo "== 14. infer.py: segmentation -> cells -> the ensemble -> $out/submission.csv, a per-cell table, pictures"
python infer.py -i "$out/test" -e "$out/ensemble.yaml" -o "$out/submission.csv" --cells-out "$out/cells.h5ad" \
    --embeddings --overlays "$out/pictures" --overwrite
python -m hpasc.commands.report --cells "$out/cells.h5ad"
echo "   the cells as AnnData (scanpy: sc.read_h5ad): $out/cells.h5ad; its report with a map of the cells:" \
    "$out/cells-report/index.html; pictures of the predictions: $out/pictures/index.html"
echo "== 15. the competition metric on the test images (per-class AP at mask IoU >= 0.6)"
python -m hpasc.commands.evaluate --submission "$out/submission.csv" --truth "$out/test/truth"
