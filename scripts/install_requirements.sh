#!/usr/bin/env bash
# Install a pinned requirements file with $PYTHON (default: python).
#   install_requirements.sh [--keep-torch] REQUIREMENTS_FILE
# --keep-torch (the PyTorch Docker image, or a venv that inherits the system's torch): the installed
# torch and torchvision are kept: their pins are dropped and the installed versions become
# constraints, so no other package can pull in a different torch.
# HPASC_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu, the CPU-only build): torch and
# torchvision are installed at their pinned versions from that package index first, then kept.
set -euo pipefail
keep_torch=false
if [ "${1:-}" = "--keep-torch" ]; then
    keep_torch=true
    shift
fi
requirements=${1:?usage: install_requirements.sh [--keep-torch] REQUIREMENTS_FILE}
python=${PYTHON:-python}
torch_index=${HPASC_TORCH_INDEX:-}
if ! $keep_torch && [ -z "$torch_index" ]; then
    exec "$python" -m pip install --quiet -r "$requirements"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
split_pins() {  # the file without its torch pins -> requirements.txt, the pins -> pins.txt
    "$python" - "$requirements" "$tmp" <<'PY'
import pathlib, re, sys

requirements, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])


def lines(path):
    # Follow "-r other.txt" includes so that the torch pins can be found in all of them.
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            yield from lines(path.parent / line[3:].strip())
        else:
            yield line


pin = re.compile(r"(torch|torchvision)==")
every = list(lines(requirements))
(out / "requirements.txt").write_text("".join(f"{line}\n" for line in every if not pin.match(line)))
(out / "pins.txt").write_text("".join(f"{line}\n" for line in every if pin.match(line)))
PY
}
split_pins
if ! $keep_torch; then
    echo "installing $(tr '\n' ' ' <"$tmp/pins.txt")from $torch_index"
    "$python" -m pip install --quiet --index-url "$torch_index" -r "$tmp/pins.txt"
fi
"$python" -c 'from importlib.metadata import version
for name in ("torch", "torchvision"):
    print(f"{name}=={version(name)}")' >"$tmp/constraints.txt"
echo "keeping the installed $(tr '\n' ' ' <"$tmp/constraints.txt")"
"$python" -m pip install --quiet -r "$tmp/requirements.txt" -c "$tmp/constraints.txt"
