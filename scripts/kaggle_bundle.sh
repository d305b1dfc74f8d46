#!/usr/bin/env bash
# Build an offline folder to upload as a Kaggle dataset (see docs/kaggle.md): OUT/wheels/ (this
# project's wheel and, unless --no-requirement-wheels, wheels of the pinned requirements that
# Kaggle's image lacks), OUT/infer.py, OUT/models/ (the ensemble's checkpoints), OUT/ensemble.yaml
# (paths relative to OUT), OUT/segmentation/ (HPA's weights, with --segmentation-weights) and
# OUT/EXPECTS.txt (the modules taken from Kaggle's image, which the notebook checks) and
# OUT/MANIFEST.txt (sha256, size and path of every file). The folder is built beside OUT and renamed
# at the end, so a failed run leaves no half-built OUT.
set -euo pipefail
usage="usage: scripts/kaggle_bundle.sh OUT -e ENSEMBLE [--segmentation-weights DIR] [--no-requirement-wheels | --wheels-from DIR] [--python-version X.Y] [--overwrite]"

die() {
    echo "error: $*" >&2
    exit 2
}

help() {
    cat <<EOF
$usage

  OUT                          the bundle folder to write (must not exist unless --overwrite)
  -e, --ensemble ENSEMBLE      the ensemble file (YAML or JSON) whose checkpoints go into OUT/models
  --segmentation-weights DIR   a folder holding HPA's dpn_unet_nuclei_v1.pth and
                               dpn_unet_cell_3ch_v1.pth, copied to OUT/segmentation (without them
                               the bundle runs infer.py's classical segmentation)
  --no-requirement-wheels      ship only this project's wheel (no registry access needed)
  --wheels-from DIR            take the requirement wheels from the folder DIR (a wheelhouse), not
                               from the package registry
  --python-version X.Y         the Python of Kaggle's image, for the requirement wheels (default 3.11)
  --overwrite                  replace an existing OUT
  -h, --help                   show this help
EOF
}

out="" ensemble="" segmentation="" requirement_wheels=true wheelhouse="" python_version=3.11 overwrite=false
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) help; exit 0 ;;
        -e | --ensemble) [ $# -ge 2 ] || die "$1 needs a file; $usage"; ensemble=$2; shift 2 ;;
        --segmentation-weights) [ $# -ge 2 ] || die "$1 needs a folder; $usage"; segmentation=$2; shift 2 ;;
        --python-version) [ $# -ge 2 ] || die "$1 needs a version; $usage"; python_version=$2; shift 2 ;;
        --no-requirement-wheels) requirement_wheels=false; shift ;;
        --wheels-from) [ $# -ge 2 ] || die "$1 needs a folder; $usage"; wheelhouse=$2; shift 2 ;;
        --overwrite) overwrite=true; shift ;;
        -*) die "unknown option $1; $usage" ;;
        *) [ -z "$out" ] || die "more than one OUT ($out, $1); $usage"; out=$1; shift ;;
    esac
done
[ -n "$out" ] || die "OUT is missing; $usage"
[ -n "$ensemble" ] || die "-e ENSEMBLE is missing; $usage"
[[ $python_version =~ ^3\.[0-9]+$ ]] || die "--python-version must look like 3.11, not $python_version"
[ -f "$ensemble" ] || die "$ensemble: ensemble file does not exist"
out=$(realpath -m "$out")
ensemble=$(realpath "$ensemble")
if [ -n "$wheelhouse" ]; then
    $requirement_wheels || die "--wheels-from and --no-requirement-wheels exclude each other"
    [ -d "$wheelhouse" ] || die "$wheelhouse: wheel folder does not exist"
    wheelhouse=$(realpath "$wheelhouse")
fi
if [ -n "$segmentation" ]; then
    [ -d "$segmentation" ] || die "$segmentation: segmentation weights folder does not exist"
    segmentation=$(realpath "$segmentation")
fi
if [ -e "$out" ] && ! $overwrite; then
    die "$out exists (use --overwrite to replace it)"
fi
parent=$(dirname "$out")
mkdir -p "$parent"

# shellcheck disable=SC1091
source "$(dirname "$0")/env.sh" # the project's environment
cd "$hpasc_root"
[ -f infer.py ] || die "infer.py is missing from the repository $PWD"

tmp=$(mktemp -d "$parent/.$(basename "$out").tmp-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== checkpoints of $ensemble -> models/, ensemble.yaml"
python -m hpasc.commands.kaggle models -e "$ensemble" -o "$tmp" | sed 's/^/   /'

echo "== wheels/: this project's wheel"
# Built from a copy of the sources, so that no build/ or egg-info folder lands in the repository.
# Without build isolation (no registry needed) when the installed setuptools can build wheels. With
# requirements.txt, so that the wheel declares its pinned dependencies: the notebook installs it with
# --no-deps (Kaggle's image brings torch and the rest at its own versions; EXPECTS.txt names them),
# and anywhere else pip refuses it where they cannot be had.
src=$tmp/.source
mkdir -p "$src" "$tmp/wheels"
cp pyproject.toml requirements.txt "$src/"
cp -r hpasc "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
isolation=(--no-build-isolation)
if ! python -c 'import setuptools.command.bdist_wheel' 2>/dev/null && ! python -c 'import wheel' 2>/dev/null; then
    echo "   (setuptools here cannot build wheels: building with an isolated setuptools from the registry)"
    isolation=()
fi
python -m pip wheel --quiet --no-deps "${isolation[@]}" -w "$tmp/wheels" "$src"
rm -rf "$src"

if $requirement_wheels; then
    echo "== wheels/: pinned requirements that Kaggle's image lacks (Python $python_version, manylinux x86_64)"
    pins=$(python -m hpasc.commands.kaggle pins requirements.txt)
    abi=cp${python_version/./}
    # pip matches --platform exactly: every manylinux that Kaggle's glibc (2.35) runs is named.
    platforms=(--platform manylinux2014_x86_64)
    for glibc in $(seq 17 35); do
        platforms+=(--platform "manylinux_2_${glibc}_x86_64")
    done
    # A binary wheel for Kaggle's Python, from the wheelhouse or the registry.
    binary=(--quiet --no-deps --only-binary :all: --python-version "$python_version" --implementation cp
        --abi "$abi" --abi abi3 --abi none "${platforms[@]}" -d "$tmp/wheels")
    for pin in $pins; do
        echo "   $pin"
        if [ -n "$wheelhouse" ]; then
            python -m pip download "${binary[@]}" --no-index --find-links "$wheelhouse" "$pin" 2>/dev/null ||
                die "$wheelhouse holds no wheel of $pin for CPython $python_version on x86_64 Linux"
        else
            # Packages published only as source are built here (they are pure Python).
            python -m pip download "${binary[@]}" "$pin" 2>/dev/null ||
                python -m pip wheel --quiet --no-deps -w "$tmp/wheels" "$pin" ||
                die "could not get a wheel of $pin (is the package registry reachable? else use --no-requirement-wheels)"
        fi
    done
else
    echo "   (no requirement wheels: Kaggle's image must already hold them; see docs/kaggle.md)"
fi

echo "== infer.py and the top-level scripts it imports"
scripts=$(python -m hpasc.commands.kaggle scripts . infer.py)
for script in $scripts; do
    echo "   $script"
    cp "$script" "$tmp/"
done

if [ -n "$segmentation" ] && [ -f "$segmentation/dpn_unet_nuclei_v1.pth" ] &&
    [ -f "$segmentation/dpn_unet_cell_3ch_v1.pth" ]; then
    echo "== segmentation/: HPA's weights from $segmentation (infer.py uses HPA's segmentation)"
    mkdir "$tmp/segmentation"
    cp "$segmentation/dpn_unet_nuclei_v1.pth" "$segmentation/dpn_unet_cell_3ch_v1.pth" "$tmp/segmentation/"
else
    where=${segmentation:+ ($segmentation lacks dpn_unet_nuclei_v1.pth or dpn_unet_cell_3ch_v1.pth)}
    echo "note: no HPA segmentation weights$where: the bundle will use infer.py's classical segmentation" >&2
fi

python -m hpasc.commands.kaggle expects "$tmp"
python -m hpasc.commands.kaggle manifest "$tmp"
chmod 755 "$tmp" # mktemp made it private
if [ -e "$out" ]; then
    old=$(mktemp -d "$parent/.$(basename "$out").old-XXXXXX")
    mv "$out" "$old/"
    mv "$tmp" "$out"
    rm -rf "$old"
else
    mv "$tmp" "$out"
fi
trap - EXIT
echo "wrote $out ($(du -sh "$out" | cut -f1)); upload it as the Kaggle dataset 'hpasc-bundle' (docs/kaggle.md)"
