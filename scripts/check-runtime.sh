#!/usr/bin/env bash
# Runtime-only checks: what a Hugging Face Space and a `pip install` user get, outside the dev venv.
#   space  a venv built from requirements.txt alone (.venv-runtime) boots app.py from a copy of what
#          deploy.yml uploads, as a Space does (meddx not installed, no meddx/dev), with a tiny model, and
#          answers one /analyze call through gradio_client; the app is then stopped and nothing it started
#          may be left running.
#   wheel  `pip install .` into its own venv (.venv-wheel); from a folder outside the source tree,
#          `python -m meddx analyze` prints a result, every data file and template of the source package
#          is installed, the declared dependencies are requirements.txt's, and `train` without the
#          train extra fails with one line naming it.
# Both venvs are cached like .venv: re-created from scratch only when requirements.txt changes; meddx is
# reinstalled into .venv-wheel (--no-deps, seconds) when its source changes. Each is seeded with hard links
# to the dev venv's copies of the very distributions pip resolved for it (scripts/seed_venv.py), then checked
# to hold exactly those: three venvs cost the disk of one (CI machines can be short of disk). The tiny model and the film
# are made with the dev venv (.venv, or $DEV_PYTHON). Offline: no Hub, no network once the venvs exist.
# Usage: scripts/check-runtime.sh [space|wheel|all]    (called by tests/test_runtime.py)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
what="${1:-all}"
dev_python="${DEV_PYTHON:-$root/.venv/bin/python}"
dev_venv="$(dirname "$(dirname "$dev_python")")"  # seeds the runtime venvs' packages (scripts/seed_venv.py)
python="${PYTHON:-python3}"
pip_quiet=(--quiet --disable-pip-version-check)

work="$(mktemp -d "${TMPDIR:-/tmp}/meddx-runtime.XXXXXX")"
app_pid=""
cleanup() {
  [ -n "$app_pid" ] && stop_app >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "check-runtime: FAILED: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "---- last 40 lines of $3 ----" >&2
    tail -n 40 "$2" >&2
    echo "----" >&2
  fi
  exit 1
}
step() { echo "check-runtime: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Isolated and offline: no Hub, no user caches, one torch thread (the machine is shared).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
export HF_HOME="$work/hf" MEDDX_CACHE_DIR="$work/meddx-cache" GRADIO_TEMP_DIR="$work/gradio"
export MPLCONFIGDIR="$work/mpl" MEDDX_THREADS=1 OMP_NUM_THREADS=1
unset PYTHONPATH MEDDX_MODEL MEDDX_PROBE

model="$work/model"
film="$work/film.png"
notes="58-year-old smoker, 3 weeks of cough, no fever"
make_inputs() {
  [ -x "$dev_python" ] || fail "no dev venv at $dev_python (run scripts/setup-venv.sh requirements-dev.txt)"
  "$dev_python" -m meddx make-tiny-model "$model" >"$work/model.log" 2>&1 \
    || fail "the dev venv could not make the tiny model" "$work/model.log" "python -m meddx make-tiny-model"
  "$dev_python" - "$film" <<'EOF'
import sys

import numpy as np
from PIL import Image

y, x = np.mgrid[0:320, 0:256]
film = 110 + 50 * np.sin(x / 23.0) * np.cos(y / 31.0) + 40 * np.exp(-((x - 90) ** 2 + (y - 140) ** 2) / 400.0)
Image.fromarray(np.clip(film, 0, 255).astype(np.uint8)).save(sys.argv[1])
EOF
}

# --- space ----------------------------------------------------------------------------------------------

# PIDs of every process in the app's session (the app and anything it started), one a line.
session_members() {
  "$dev_python" - "$1" <<'EOF'
import os
import sys

for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if fields[3] == sys.argv[1] and fields[0] != "Z":  # session id; zombies are already dead
        print(pid)
EOF
}

stop_app() {
  local pid="$app_pid" i
  app_pid=""
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    [ -z "$(session_members "$pid")" ] && break
    sleep 0.2
  done
  if [ -n "$(session_members "$pid")" ]; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 1
    return 1
  fi
  wait "$pid" 2>/dev/null || true
}

check_space() {
  local t0 port
  t0="$(now)"
  scripts/setup-venv.sh --venv .venv-runtime --exact --seed-from "$dev_venv" requirements.txt \
    || fail "could not build .venv-runtime from requirements.txt"
  step "space: .venv-runtime (requirements.txt alone) ready in $(since "$t0") s"
  port="$("$dev_python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  t0="$(now)"
  mkdir -p "$work/space"
  cp -r app.py requirements.txt README.md meddx "$work/space/"
  rm -rf "$work/space/meddx/dev"
  find "$work/space" -name __pycache__ -prune -exec rm -rf {} +
  cd "$work/space"
  # What .github/workflows/deploy.yml uploads (meddx/ without meddx/dev/), run as a Space runs it: app.py
  # from that folder, meddx imported from the source, not installed. In a session of its own (os.setsid,
  # then exec: same pid), so that stop_app can find and stop all it starts; told to stop (SIGTERM) if this
  # script is killed before it can clean up.
  "$dev_python" -c 'import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
os.setsid()
os.execv(sys.argv[1], sys.argv[1:])' \
    "$root/.venv-runtime/bin/python" app.py --port "$port" --model "local-dir:$model" >"$work/app.log" 2>&1 &
  app_pid=$!
  cd "$root"
  .venv-runtime/bin/python - "$port" "$app_pid" "$film" "$notes" >"$work/client.log" 2>&1 <<'EOF' || {
import json
import os
import sys
import time
import urllib.request

port, pid, film, notes = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
url = f"http://127.0.0.1:{port}/"


def running() -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


start = time.monotonic()
while True:
    if not running():
        sys.exit("the app exited before it served a page (its log follows)")
    try:
        with urllib.request.urlopen(url, timeout=5):
            break
    except OSError:
        if time.monotonic() - start > float(os.environ.get("APP_START_TIMEOUT", "300")):
            sys.exit(f"the app did not serve {url} within {time.monotonic() - start:.0f} s")
        time.sleep(1)
ready = time.monotonic() - start

from gradio_client import Client, handle_file  # noqa: E402

start = time.monotonic()
client = Client(url, verbose=False)
job = client.submit(handle_file(film), notes, api_name="/analyze")
result, report = job.result(timeout=300)
took = time.monotonic() - start
if not isinstance(result, dict) or not result.get("findings"):
    sys.exit(f"/analyze returned no findings: {json.dumps(result)[:600]}")
for finding in result["findings"]:
    if not (isinstance(finding.get("label"), str) and 0 <= finding.get("probability", -1) <= 1):
        sys.exit(f"/analyze returned a malformed finding: {json.dumps(finding)[:600]}")
if not isinstance(report, str) or not report.strip():
    sys.exit(f"/analyze returned no report: {report!r:.300}")
if not any(item.get("evidence") for item in result["findings"]):
    sys.exit("/analyze read nothing from the notes (no finding has evidence)")
top = result["findings"][0]
print(
    f"app ready after {ready:.1f} s; /analyze answered in {took:.1f} s: {len(result['findings'])} findings "
    f"(top {top['label']} {top['probability']:.3f}), a {len(report)}-character report"
)
EOF
    cat "$work/client.log" >&2
    fail "the Space (app.py in .venv-runtime, requirements.txt alone) did not answer /analyze" \
      "$work/app.log" "the app's output"
  }
  stop_app || fail "the app did not stop on SIGTERM (killed)" "$work/app.log" "the app's output"
  if "$dev_python" -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "$port" 2>/dev/null; then
    fail "something still listens on port $port after the app was stopped"
  fi
  step "space: ok: $(cat "$work/client.log"); stopped, nothing left running; $(since "$t0") s in all"
}

# --- wheel ----------------------------------------------------------------------------------------------

check_wheel() {
  local t0 src venv=.venv-wheel deps_digest src_digest
  t0="$(now)"
  # Build from a copy of what the wheel is made of: setuptools' build/ folder in the source tree can hold
  # files that no longer exist (a module moved elsewhere) and would slip them into the wheel.
  src="$work/src"
  mkdir -p "$src"
  cp -r pyproject.toml README.md requirements*.txt meddx "$src/"
  [ -f LICENSE ] && cp LICENSE "$src/"
  find "$src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
  deps_digest="$(cat requirements.txt | sha256sum | cut -d' ' -f1)"
  src_digest="$(cd "$src" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$venv/.installed-deps" 2>/dev/null)" != "$deps_digest" ]; then
    echo "Installing meddx (pip install .) into $venv ..." >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" --upgrade pip
    {
      "$venv/bin/python" -m pip install "${pip_quiet[@]}" --dry-run --report "$venv/.resolved.json" "$src" \
        && "$venv/bin/python" scripts/seed_venv.py "$venv/.resolved.json" "$dev_venv" "$venv" \
        && "$venv/bin/python" -m pip install "${pip_quiet[@]}" "$src" \
        && "$venv/bin/python" scripts/seed_venv.py --verify "$venv/.resolved.json" "$venv"
    } >"$work/pip.log" 2>&1 || fail "pip install . into a clean venv failed" "$work/pip.log" "pip's output"
    grep '^seed_venv:' "$work/pip.log" >&2 || true
    echo "$deps_digest" >"$venv/.installed-deps"
    echo "$src_digest" >"$venv/.installed-meddx"
  elif [ "$(cat "$venv/.installed-meddx" 2>/dev/null)" != "$src_digest" ]; then
    "$venv/bin/python" -m pip install "${pip_quiet[@]}" --no-deps --force-reinstall "$src" >"$work/pip.log" 2>&1 \
      || fail "pip install --no-deps . failed" "$work/pip.log" "pip's output"
    echo "$src_digest" >"$venv/.installed-meddx"
  fi
  step "wheel: $venv (pip install .) ready in $(since "$t0") s"
  t0="$(now)"
  "$venv/bin/python" -m pip check >"$work/pip-check.log" 2>&1 \
    || fail "pip check: the installed dependencies do not fit together" "$work/pip-check.log" "pip check"

  # Everything below runs outside the source tree, so only the installed package can be imported.
  local out="$work/outside" wpy="$root/$venv/bin/python"
  mkdir -p "$out"
  (cd "$out" && "$wpy" - "$root/meddx" "$root/requirements.txt") >"$work/install.log" 2>&1 <<'EOF' || {
import importlib.metadata as md
import re
import sys
from pathlib import Path

import meddx

source, requirements = Path(sys.argv[1]), Path(sys.argv[2])
installed = Path(meddx.__file__).parent
if installed.resolve() == source.resolve() or "site-packages" not in installed.parts:
    sys.exit(f"meddx was imported from {installed}, not from the installed wheel")


def data_files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    }


def excluded(relative: str) -> bool:
    """Inside a package left out of the wheel on purpose (pyproject's packages.find exclude: meddx.dev)."""
    parents = Path(relative).parents
    return any((source / p / "__init__.py").is_file() and not (installed / p).exists() for p in parents)


missing = sorted(f for f in data_files(source) - data_files(installed) if not excluded(f))
if missing:
    sys.exit(
        "the installed package lacks these data files of the source tree (add their pattern to "
        "[tool.setuptools.package-data] in pyproject.toml): " + ", ".join(missing)
    )


def names(lines) -> set[str]:
    return {re.split(r"[\[=<>!~;\s]", line, maxsplit=1)[0].lower().replace("_", "-") for line in lines}


def listed(path: Path) -> set[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return names(line for line in lines if line and not line.startswith(("#", "-")))


requires = md.requires("meddx") or []
declared = names(r for r in requires if "extra ==" not in r)
if declared != listed(requirements):
    sys.exit(f"meddx's declared dependencies differ from requirements.txt: {sorted(declared ^ listed(requirements))}")
extras = {}
for path in sorted(requirements.parent.glob("requirements-*.txt")):
    extra = path.stem.removeprefix("requirements-")
    if extra != "dev":
        extras[extra] = names(r for r in requires if re.search(rf"extra == .{extra}.", r))
        if extras[extra] != listed(path) or not extras[extra]:
            sys.exit(f"the '{extra}' extra of the installed meddx differs from {path.name}: {sorted(extras[extra])}")
if "train" not in extras:
    sys.exit("no requirements-train.txt: meddx declares no 'train' extra")
print(
    f"{len(data_files(installed))} data files installed; dependencies = requirements.txt; "
    f"extras {', '.join(extras)} = their requirements files"
)
EOF
    fail "the installed package is incomplete" "$work/install.log" "the check's output"
  }

  (cd "$out" && "$wpy" -m meddx analyze "$film" --model "local-dir:$model" --notes "$notes" --json \
    --overlays "$out/maps") >"$out/result.json" 2>"$work/analyze.log" \
    || fail "python -m meddx analyze failed in the installed package" "$work/analyze.log" "its stderr"
  "$wpy" - "$out/result.json" "$out/maps" >>"$work/install.log" 2>&1 <<'EOF' || {
import json
import sys
from pathlib import Path

data = json.loads(Path(sys.argv[1]).read_text())
if not data.get("findings") or not data.get("disclaimer"):
    sys.exit(f"analyze printed no findings or no disclaimer: {json.dumps(data)[:600]}")
maps = sorted(Path(sys.argv[2]).glob("*.png"))
if not maps:
    sys.exit("analyze --overlays wrote no map")
print(f"analyze: {len(data['findings'])} findings, {len(maps)} overlay PNGs")
EOF
    fail "python -m meddx analyze printed an unexpected result" "$work/install.log" "the check's output"
  }

  # `train` needs the train extra, which this venv lacks: one line naming it, exit status 2.
  local status=0
  (cd "$out" && "$wpy" -m meddx train --data "$out" --out "$out/head") >"$work/train.log" 2>&1 || status=$?
  if [ "$status" -ne 2 ] || [ "$(wc -l <"$work/train.log")" -ne 1 ] || ! grep -q 'meddx\[train\]' "$work/train.log"; then
    fail "train without the train extra should exit 2 with one line naming meddx[train] (exit $status)" \
      "$work/train.log" "its output"
  fi
  "$root/$venv/bin/meddx" --help >/dev/null 2>"$work/script.log" \
    || fail "the meddx console script does not start" "$work/script.log" "its stderr"
  step "wheel: ok: $(tr '\n' ' ' <"$work/install.log")train without the extra: $(cat "$work/train.log"); $(since "$t0") s"
}

case "$what" in
  space) make_inputs; check_space ;;
  wheel) make_inputs; check_wheel ;;
  all) make_inputs; check_space; check_wheel ;;
  *) echo "usage: scripts/check-runtime.sh [space|wheel|all]" >&2; exit 2 ;;
esac
