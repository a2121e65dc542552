#!/usr/bin/env bash
# Build the one-folder desktop app into build/dist/mono-quant/ with PyInstaller (see docs/packaging.md).
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu picks PyTorch's CPU-only wheel where the
# default index would give the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build
python3 -m venv "$BUILD/venv"
. "$BUILD/venv/bin/activate"
python -m pip install --quiet --upgrade pip
# torch first and pinned, as in CI, so the project's open range cannot pull another build.
python -m pip install --quiet torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
# setuptools stages the wheel in build/lib; clear it so removed files cannot linger.
rm -rf "$BUILD/lib" "$BUILD"/bdist.*
# A regular (not editable) install: PyInstaller then finds the resources and metadata in site-packages.
python -m pip install --quiet . pyinstaller==6.22.3

# From build/, so that the installed package is analysed, not the source tree in the current folder.
root="$(pwd)"
cd "$BUILD"
python -m PyInstaller --noconfirm --clean --distpath dist --workpath work "$root/packaging/mono-quant.spec"

app=dist/mono-quant
for needed in _internal/mono_quant_gui/resources/app/icon.svg _internal/mono_quant_gui/resources/linux \
              _internal/mono_quant-*.dist-info; do
  compgen -G "$app/$needed" >/dev/null || { echo "build.sh: $app/$needed is missing" >&2; exit 1; }
done
echo "built $BUILD/$app/ ($(du -sh "$app" | cut -f1))"
