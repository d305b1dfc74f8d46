#!/usr/bin/env bash
# Run HERE, before a device call: downloads into .whl/ (git-ignored) the wheels of the pinned
# requirements that the GPU machine's image lacks or holds at other versions (it has torch,
# torchvision, OpenCV, numpy, scipy, tifffile, imageio, tqdm, PyYAML, matplotlib, pytest), built
# for its Python 3.12 on x86-64. Versions come from requirements.txt. Generates nothing heavy:
# the data is made on the device. Then: the device tool's run with carry [".whl"] and the
# command "bash bench/gpu/run.sh".
set -euo pipefail
cd "$(dirname "$0")/../.."
# Binary wheels, and pure-Python packages published only as sources (built here into wheels).
binary=(pycocotools zarr numcodecs iterative-stratification timm pandas scikit-image)
extra=(donfig==0.8.1.post1 google-crc32c==1.9.0 ttach==0.0.3)  # zarr's and grad-cam's own needs
source_only=(grad-cam efficientnet-pytorch)
pin() { grep -i "^$1==" requirements.txt || { echo "error: $1 is not pinned in requirements.txt" >&2; exit 2; }; }
rm -rf .whl && mkdir .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl $(for p in "${binary[@]}"; do pin "$p"; done) "${extra[@]}"
python3 -m pip wheel -q --no-deps -w .whl $(for p in "${source_only[@]}"; do pin "$p"; done)
du -sh .whl
ls .whl
