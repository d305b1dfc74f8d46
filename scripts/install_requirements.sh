#!/usr/bin/env bash
# Install a pinned requirements file with $PYTHON (default: python).
#   install_requirements.sh [--keep-torch] REQUIREMENTS_FILE
# --keep-torch (the PyTorch Docker image, or a venv that inherits the system's torch): the installed
# torch and torchvision are kept: their pins are dropped and the installed versions become
# constraints, so no other package can pull in a different torch.
set -euo pipefail
keep_torch=false
if [ "${1:-}" = "--keep-torch" ]; then
    keep_torch=true
    shift
fi
requirements=${1:?usage: install_requirements.sh [--keep-torch] REQUIREMENTS_FILE}
python=${PYTHON:-python}
if ! $keep_torch; then
    exec "$python" -m pip install --quiet -r "$requirements"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" - "$requirements" "$tmp" <<'PY'
import pathlib, re, sys
from importlib.metadata import version

requirements, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])


def lines(path):
    # Follow "-r other.txt" includes so that the torch pins can be dropped from all of them.
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            yield from lines(path.parent / line[3:].strip())
        elif not re.match(r"(torch|torchvision)==", line):
            yield line


(out / "requirements.txt").write_text("\n".join(lines(requirements)) + "\n")
(out / "constraints.txt").write_text(
    "".join(f"{name}=={version(name)}\n" for name in ("torch", "torchvision")))
PY
echo "keeping the installed $(tr '\n' ' ' <"$tmp/constraints.txt")"
"$python" -m pip install --quiet -r "$tmp/requirements.txt" -c "$tmp/constraints.txt"
