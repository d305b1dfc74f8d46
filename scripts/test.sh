#!/usr/bin/env bash
# Run the test suite (sets up the virtual environment first). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -m pytest "$@"
