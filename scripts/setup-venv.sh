#!/usr/bin/env bash
# Create a venv in the repo root and install a requirements file into it, once per content change.
# Usage: scripts/setup-venv.sh [--venv DIR] [--exact] REQUIREMENTS
#   default  .venv, plus meddx itself in editable mode. scripts/app.sh asks for requirements.txt and
#            scripts/test.sh for requirements-dev.txt; installing a file stamps every file it includes
#            with -r, so after test.sh, app.sh installs nothing.
#   --exact  the requirements alone (no meddx), in a venv re-created from scratch whenever they change,
#            so that nothing dropped from the file lingers: what a Hugging Face Space installs
#            (scripts/check-runtime.sh uses it for .venv-runtime).
#   --seed-from VENV  (with --exact) before installing, hard-link from VENV the packages pip resolved for the file that
#            VENV holds at the same version (scripts/seed_venv.py), then check that the venv holds exactly
#            what pip resolved: the same venv without another copy of torch's ~6 GB on a short disk.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
exact=0
seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --exact) exact=1; shift ;;
    --seed-from) seed="$2"; shift 2 ;;
    *) break ;;
  esac
done
req="${1:-requirements.txt}"
if [ -n "$seed" ] && [ "$exact" != 1 ]; then
  echo "setup-venv: --seed-from needs --exact (a venv built from the requirements alone)" >&2
  exit 2
fi
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
pip_install=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "$seed" ] && [ -x "$seed/bin/python" ]; then
  "${pip_install[@]}" --dry-run --report "$venv/.resolved.json" -r "$req"
  "$venv/bin/python" scripts/seed_venv.py "$venv/.resolved.json" "$seed" "$venv"
fi
"${pip_install[@]}" -r "$req"
if [ -n "$seed" ] && [ -f "$venv/.resolved.json" ]; then
  "$venv/bin/python" scripts/seed_venv.py --verify "$venv/.resolved.json" "$venv"
fi
[ "$exact" = 1 ] || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
closure "$req" | while read -r file; do digest "$file" > "$(stamp "$file")"; done
