#!/usr/bin/env bash
# Create a venv in the repo root and install a requirements file into it, once per content change.
# Usage: scripts/setup-venv.sh [--venv DIR] [--exact] REQUIREMENTS
#   default  .venv, plus meddx itself in editable mode. scripts/app.sh asks for requirements.txt and
#            scripts/test.sh for requirements-dev.txt; installing a file stamps every file it includes
#            with -r, so after test.sh, app.sh installs nothing.
#   --exact  the requirements alone (no meddx), in a venv re-created from scratch whenever they change,
#            so that nothing dropped from the file lingers: what a Hugging Face Space installs
#            (scripts/check-runtime.sh uses it for .venv-runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
exact=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --exact) exact=1; shift ;;
    *) break ;;
  esac
done
req="${1:-requirements.txt}"
python="${PYTHON:-python3}"

# A requirements file, then the files it includes with -r, recursively.
closure() {
  local inc
  echo "$1"
  sed -nE 's/^[[:space:]]*(-r|--requirement)[[:space:]=]+([^[:space:]#]+).*/\2/p' "$1" | while read -r inc; do
    closure "$(dirname "$1")/$inc"
  done
}
digest() { closure "$1" | xargs cat | sha256sum | cut -d' ' -f1; }
stamp() { echo "$venv/.installed-$(basename "$1" .txt)"; }

[ "$(cat "$(stamp "$req")" 2>/dev/null)" = "$(digest "$req")" ] && exit 0
[ "$exact" = 1 ] && rm -rf "$venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
echo "Installing $req into $venv ..." >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
[ "$exact" = 1 ] || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
closure "$req" | while read -r file; do digest "$file" > "$(stamp "$file")"; done
