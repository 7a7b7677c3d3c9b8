#!/usr/bin/env bash
# Run HERE (not on the GPU machine): download into .whl/ the wheels that the lent GPU machine's image lacks
# or holds at another version, for scripts/gpu-check.sh to install there (that machine reaches no network).
# Its image has Python 3.12 with torch, torchvision, numpy, pillow, scipy, opencv, pyyaml, jinja2, psutil,
# safetensors, sentencepiece, pytest (see docs/gpu.md); meddx's own pins of the rest are taken from
# requirements.txt. Ray is left out (its wheel alone is over the 64 MiB the device tool carries): the
# `batch` GPU test then skips itself there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
rm -rf .whl && mkdir .whl
pinned() { grep -iE "^($1)==" requirements.txt | sed 's/ .*//'; }
packages=(
  $(pinned 'open_clip_torch|captum|pydicom|monai|transformers|tokenizers|huggingface_hub|timm|pylibjpeg')
  $(pinned 'pylibjpeg-libjpeg|pylibjpeg-openjpeg|pylibjpeg-rle')
  ftfy==6.3.1 wcwidth==0.9.5 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 pyjpegls==1.5.1
)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${packages[@]}"
ls .whl
du -sh .whl
