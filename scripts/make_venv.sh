#!/usr/bin/env bash
# Create the virtual environment VENV with Python 3.11 or newer unless it exists, then install a
# pinned requirements file into it:   scripts/make_venv.sh VENV REQUIREMENTS
# Where the base Python already has torch (the PyTorch Docker image), the environment sees the
# base's packages and keeps that torch and torchvision (install_requirements.sh --keep-torch);
# elsewhere the pinned ones are installed. Used by env.sh (the repository's .venv) and the Dockerfile.
set -euo pipefail
usage="usage: scripts/make_venv.sh VENV REQUIREMENTS"
venv=${1:?$usage}
requirements=${2:?$usage}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

base_python() {
    local candidate
    for candidate in python3.11 python3 python; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "error: Python 3.11 or newer is needed (tried python3.11, python3, python)" >&2
    return 1
}

if [ ! -x "$venv/bin/python" ]; then
    base=$(base_python)
    echo "creating the virtual environment $venv with $base"
    if "$base" -c 'import torch' 2>/dev/null; then
        "$base" -m venv --system-site-packages "$venv"
    else
        "$base" -m venv "$venv"
    fi
fi
keep=()
if grep -q "include-system-site-packages = true" "$venv/pyvenv.cfg"; then
    keep=(--keep-torch)
fi
echo "installing the pinned requirements into $venv (a minute or two the first time)"
PYTHON="$venv/bin/python" "$here/install_requirements.sh" "${keep[@]}" "$requirements"
