#!/usr/bin/env bash
# The pipeline end to end on built-in synthetic demo data (sets up the virtual environment first).
# Today's chain: synthetic HPA-like images -> an offline public-HPA mirror (file:// URLs) ->
# download_publichpa.py -> segmentator.py (HPA's networks when their weights are cached, else the
# classical backend) -> agreement of the cell masks with the synthetic truth. Later stages join
# as they land.
# Usage: ./scripts/demo.sh [OUT]   (default: demo_out/ in the repository; a re-run skips done work)
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../demo_out}")
source "$(dirname "$0")/env.sh"

echo "== 1. synthetic images with ground truth -> $out/synthetic"
python -m hpasc.synthetic -o "$out/synthetic" -n 8 --size 1024 --seed 0
echo "== 2. a public-HPA-style mirror of them (.tif.gz + kaggle_2021.tsv) -> $out/mirror"
python -m hpasc.mirror -i "$out/synthetic" -o "$out/mirror"
echo "== 3. download_publichpa.py from the mirror -> $out/publichpa"
python download_publichpa.py -i "$out/mirror/kaggle_2021.tsv" -o "$out/publichpa"

echo "== 4. segmentator.py -> $out/cells, $out/nuclei"
python segmentator.py -i "$out/publichpa" -c "$out/cells" -n "$out/nuclei"
echo "== 5. agreement of the cell masks with the synthetic truth (F1 of cells at IoU >= 0.6)"
python -m hpasc.segmentation.agreement --truth "$out/synthetic/truth" --pred "$out/cells"
