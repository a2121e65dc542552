#!/usr/bin/env bash
# Build the one-folder desktop app into build/dist/mono-quant/ with PyInstaller, then run its
# --smoke-test; the build fails when the smoke test fails (see docs/packaging.md).
# TORCH_INDEX_URL=<PyTorch's CPU-only wheel index, as its install page gives it> picks the CPU wheel where
# the default index would give the multi-GB CUDA build; ALLOW_CUDA_TORCH=1 builds with a CUDA torch anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

BUILD=build
# The build's own environment (reused by later builds): the app carries what is installed here.
python3 -m venv "$BUILD/venv"
. "$BUILD/venv/bin/activate"
python -m pip install --quiet --upgrade pip
# torch first and pinned, as in CI, so the project's open range cannot pull another build.
python -m pip install --quiet torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
if [[ "$(python -c 'import torch; print(torch.version.cuda or "")')" && "${ALLOW_CUDA_TORCH:-}" != 1 ]]; then
  echo "build.sh: build/venv has a CUDA build of torch (the app would carry GBs of CUDA libraries);" \
       "set TORCH_INDEX_URL to PyTorch's CPU index, or ALLOW_CUDA_TORCH=1" >&2
  exit 1
fi
# setuptools stages the wheel in build/lib; clear it so removed files cannot linger.
rm -rf "$BUILD/lib" "$BUILD"/bdist.*
# A regular (not editable) install: PyInstaller then finds the resources and metadata in site-packages.
python -m pip install --quiet . pyinstaller==6.22.3

# From build/, so that the installed package is analysed, not the source tree in the current folder.
root="$(pwd)"
cd "$BUILD"
python -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath work \
  "$root/packaging/mono-quant.spec"

app=dist/mono-quant
for needed in _internal/mono_quant_gui/resources/app/icon.svg _internal/mono_quant_gui/resources/linux \
              _internal/mono_quant-*.dist-info _internal/torch/bin/torch_shm_manager; do
  compgen -G "$app/$needed" >/dev/null || { echo "build.sh: $app/$needed is missing" >&2; exit 1; }
done
echo "built $BUILD/$app/ ($(du -sh "$app" | cut -f1)) in ${SECONDS} s"

# The frozen app opens its window offscreen, loads and quantizes the demo, and exits 0.
if ! QT_QPA_PLATFORM=offscreen timeout 300 "$app/mono-quant-gui" --smoke-test; then
  echo "build.sh: the smoke test of $BUILD/$app/ failed" >&2
  exit 1
fi
echo "build and smoke test done in ${SECONDS} s"
