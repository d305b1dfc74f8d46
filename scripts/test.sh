#!/usr/bin/env bash
# Run the test suite (sets up the virtual environment first). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$hpasc_root"
# The label tool's test drives the page in headless Chromium through chromedriver (Debian packages).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing chromium and chromium-driver for tests/test_label_tool.py"
    hpasc_sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        hpasc_sudo=(sudo)
    fi
    if ! { "${hpasc_sudo[@]}" apt-get update -qq &&
        "${hpasc_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }; then
        echo "error: could not install chromium and chromium-driver (needed by tests/test_label_tool.py)" >&2
        exit 1
    fi
fi
# Two processes, each running whole test files (module fixtures are built once); `-n 0` after the
# command runs everything in this process, `-n auto` uses every core.
python -m pytest -n 2 --dist loadfile "$@"
