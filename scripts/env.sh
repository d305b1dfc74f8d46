# Sourced by the other scripts, or by you (`source scripts/env.sh` from anywhere): create the
# project's virtual environment on first use (Python 3.11, scripts/make_venv.sh), install the pinned
# requirements and the project itself (editable, with its hpasc-* commands) whenever they change,
# and activate it. The caller's working directory is left as it was. HPASC_VENV chooses its folder
# (default .venv in the repository).
hpasc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hpasc_venv=${HPASC_VENV:-$hpasc_root/.venv}
hpasc_requirements=$hpasc_root/requirements-dev.txt

hpasc_stamp=$(cat "$hpasc_root/requirements.txt" "$hpasc_requirements" "$hpasc_root/pyproject.toml" |
    sha1sum | cut -c1-40)
if [ ! -x "$hpasc_venv/bin/python" ] ||
    [ "$(cat "$hpasc_venv/.requirements-stamp" 2>/dev/null)" != "$hpasc_stamp" ]; then
    "$hpasc_root/scripts/make_venv.sh" "$hpasc_venv" "$hpasc_requirements" || return 1
    echo "$hpasc_stamp" >"$hpasc_venv/.requirements-stamp"
    hpasc_reinstall=1  # pyproject.toml may have changed: install the project again below
fi
# shellcheck disable=SC1091
source "$hpasc_venv/bin/activate"
hpasc_installed=$(cd / && python -c 'import hpasc, os; print(os.path.dirname(os.path.dirname(hpasc.__file__)))' \
    2>/dev/null || true)
# The project itself, editable: its hpasc-* commands and `python -m hpasc...` work from any folder.
# Installed again when it is missing or points at another checkout (a venv shared via HPASC_VENV),
# which is said: that checkout's commands now run this one's code.
if [ -n "$hpasc_installed" ] && [ "$hpasc_installed" != "$hpasc_root" ]; then
    echo "note: $hpasc_venv ran the checkout $hpasc_installed; it now runs $hpasc_root (give each checkout its own HPASC_VENV to keep both)" >&2
fi
if [ "$hpasc_installed" != "$hpasc_root" ] || [ -n "${hpasc_reinstall:-}" ]; then
    python -m pip install --quiet --no-deps --editable "$hpasc_root"
fi
unset hpasc_reinstall
