#!/usr/bin/env bash
# Build the Docker image and check it for real: a short chain (synthetic images -> segmentator.py ->
# image_cutter.py -> infer.py with a small checkpoint) runs inside a container with no network and
# on this machine, and the two submissions (and cell masks) must be identical. Needs a running
# Docker engine and root (Debian: apt-get install docker.io debootstrap; dockerd &).
#
# No image registry is needed: the base image is Debian bookworm's Python 3.11 made here with
# debootstrap and `docker import` (the Dockerfile's default base, python:3.11-slim-bookworm, is the
# same Python on the same Debian), and the requirements are downloaded here once, with this
# machine's pip configuration, into a folder of wheels that the build reads over 127.0.0.1.
set -euo pipefail
usage="usage: scripts/docker_check.sh [--work DIR] [--tag TAG] [--keep-image]"

die() { echo "error: $*" >&2; exit 2; }

help() {
    cat <<EOF
$usage

  --work DIR     where the base file system, the wheels and the runs go (default
                 \$HPASC_CACHE/docker-check or ~/.cache/hpasc/docker-check; kept for the next run)
  --tag TAG      the image to build (default hpasc:check)
  --keep-image   keep the built image (default: removed at the end; the base image is kept)
  -h, --help     show this help
EOF
}

work=${HPASC_CACHE:-$HOME/.cache/hpasc}/docker-check tag=hpasc:check keep_image=false
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) help; exit 0 ;;
        --work) [ $# -ge 2 ] || die "$1 needs a folder; $usage"; work=$2; shift 2 ;;
        --tag) [ $# -ge 2 ] || die "$1 needs a name; $usage"; tag=$2; shift 2 ;;
        --keep-image) keep_image=true; shift ;;
        *) die "unknown argument $1; $usage" ;;
    esac
done
command -v docker >/dev/null || die "no docker command (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start it: dockerd &)"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "no debootstrap (Debian: apt-get install debootstrap)"

# shellcheck disable=SC1091
source "$(dirname "$0")/env.sh" # the project's environment: the host side of the comparison
cd "$hpasc_root"
mkdir -p "$work"
work=$(realpath "$work")
base=hpasc-base:bookworm-python3.11
start=$SECONDS
stamp() { echo "   ($((SECONDS - start)) s)"; }

echo "== base image $base (Debian bookworm, Python 3.11, made here)"
if ! docker image inspect "$base" >/dev/null 2>&1; then
    root=$work/bookworm-root
    rm -rf "$root"
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" \
        "${mirror:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
        die "debootstrap failed (its log: $work/debootstrap.log)"
    tar -C "$root" -c . | docker import - "$base" >/dev/null
    rm -rf "$root"
fi
stamp

echo "== wheels of requirements.txt -> $work/wheels (downloaded once, with this machine's pip configuration)"
# pip wheel: a requirement published only as source (efficientnet-pytorch) is built here, once.
python -m pip wheel --quiet -r requirements.txt -w "$work/wheels" >"$work/download.log" 2>&1 ||
    die "downloading the requirements failed (its log: $work/download.log)"
find "$work/wheels" -type f ! -name '*.whl' -delete
stamp

echo "== docker build -t $tag (pip reads the wheels over 127.0.0.1, no index)"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python -m http.server --bind 127.0.0.1 --directory "$work/wheels" "$port" >/dev/null 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    if ! $keep_image; then
        docker image rm -f "$tag" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
build_start=$SECONDS
docker build --quiet --network host --build-arg BASE="$base" --build-arg PIP_NO_INDEX=1 \
    --build-arg PIP_FIND_LINKS="http://127.0.0.1:$port/" -t "$tag" . >"$work/build.log" 2>&1 ||
    die "docker build failed (its log: $work/build.log)"
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "   built in $((SECONDS - build_start)) s; image size $((size / 1000000)) MB"
torch_here=$(python -c 'import torch; print(torch.__version__)')
torch_there=$(docker run --rm --network none "$tag" python -c 'import torch; print(torch.__version__)')
[ "$torch_here" = "$torch_there" ] || die "the image's torch is $torch_there, this environment's $torch_here"
echo "   torch $torch_there in the image and here"
stamp

runs=$work/runs
rm -rf "$runs"
mkdir -p "$runs/host" "$runs/container" "$runs/inputs"
echo "== a small checkpoint, trained here (1 epoch at 32 px on 8 synthetic images)"
(
    cd "$runs/inputs"
    python -m hpasc.commands.synthetic -o train -n 8 --size 256 --seed 1 --no-progress
    python "$hpasc_root/segmentator.py" -i train -c train_cells --backend classical --no-progress
    python "$hpasc_root/image_cutter.py" -i train -m train_cells -o dataset --size 32 --no-progress
    python "$hpasc_root/data_loader.py" -i dataset --folds 2
    python "$hpasc_root/train_me.py" -i dataset -s models -n small -c bce -b 16 --epochs 1 --epoch-size 64 \
        --pretrained none --device cpu --no-progress
) >"$runs/inputs.log" 2>&1 || die "making the checkpoint failed (its log: $runs/inputs.log)"
stamp

# The chain, the same commands on both sides: new synthetic test images, their masks, their cells,
# and the submission.
chain='set -e
python -m hpasc.commands.synthetic -o test -n 4 --size 256 --seed 7 --no-progress
python "$SCRIPTS/segmentator.py" -i test -c test_cells --backend classical --no-progress
python "$SCRIPTS/image_cutter.py" -i test -m test_cells -o test_dataset --size 32 --no-labels --no-progress
python "$SCRIPTS/infer.py" -i test -e "$INPUTS/models/small-1.pt" -o submission.csv --backend classical \
    --device cpu --no-progress'
echo "== the chain in a container (--network none, the CPU: no --gpus)"
docker run --rm --network none --user "$(id -u):$(id -g)" -e HOME=/tmp -e SCRIPTS=/opt/hpasc -e INPUTS=/inputs \
    -v "$runs/inputs:/inputs:ro" -v "$runs/container:/out" -w /out "$tag" bash -c "$chain" \
    >"$runs/container.log" 2>&1 || die "the chain failed in the container (its log: $runs/container.log)"
stamp
echo "== the same chain here"
(cd "$runs/host" && SCRIPTS=$hpasc_root INPUTS=$runs/inputs bash -c "$chain") >"$runs/host.log" 2>&1 ||
    die "the chain failed here (its log: $runs/host.log)"
stamp

echo "== compare"
cmp "$runs/host/submission.csv" "$runs/container/submission.csv" ||
    die "the container's submission differs from this machine's"
diff -r "$runs/host/test" "$runs/container/test" >/dev/null || die "the synthetic test images differ"
diff -r -x segmentation.json -x manifest.json "$runs/host/test_cells" "$runs/container/test_cells" >/dev/null ||
    die "the cell masks differ"
rows=$(($(wc -l <"$runs/host/submission.csv") - 1))
echo "ok: the container's submission ($rows images) and cell masks equal this machine's;" \
    "image $((size / 1000000)) MB, torch $torch_there; $((SECONDS - start)) s in all"
