#!/usr/bin/env bash
# Add a built app folder to the current user's desktop menu: the .desktop entry (Exec pointing
# into the folder), the AppStream metainfo and the icons, under $XDG_DATA_HOME (~/.local/share).
#   packaging/install-desktop.sh [DIST_FOLDER]     default: build/dist/mono-quant
#   packaging/install-desktop.sh --uninstall [DIST_FOLDER]
set -euo pipefail

uninstall=0
if [[ "${1:-}" == "--uninstall" ]]; then uninstall=1; shift; fi
dist="${1:-$(dirname "$0")/../build/dist/mono-quant}"
[[ -d "$dist" ]] || { echo "install-desktop.sh: $dist: no such folder (build it with packaging/build.sh)" >&2; exit 2; }
dist="$(cd "$dist" && pwd)"
case "$dist" in
  *[\"\`\$\\%\|\&]*) echo "install-desktop.sh: $dist: move the folder to a path without \" \` \$ \\ % | &" >&2; exit 2;;
esac
res="$dist/_internal/mono_quant_gui/resources"
desktop=("$res"/linux/*.desktop)
[[ -f "${desktop[0]}" ]] || { echo "install-desktop.sh: $res/linux: no .desktop file" >&2; exit 2; }
app_id="$(basename "${desktop[0]}" .desktop)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"

targets=("$data/applications/$app_id.desktop" "$data/metainfo/$app_id.metainfo.xml"
         "$data/icons/hicolor/scalable/apps/$app_id.svg")
for png in "$res"/app/icon-*.png; do
  size="$(basename "$png" .png)"; size="${size#icon-}"
  targets+=("$data/icons/hicolor/${size}x${size}/apps/$app_id.png")
done

if (( uninstall )); then
  rm -f "${targets[@]}"
else
  exe="$(sed -n 's/^Exec=\([^ ]*\).*/\1/p' "${desktop[0]}")"
  [[ -x "$dist/$exe" ]] || { echo "install-desktop.sh: $dist/$exe: not an executable" >&2; exit 2; }
  mkdir -p "$data/applications"
  # Quote the absolute path: the Exec key splits on spaces.
  sed "s|^Exec=$exe|Exec=\"$dist/$exe\"|" "${desktop[0]}" > "$data/applications/$app_id.desktop"
  install -Dm644 "$res/linux/$app_id.metainfo.xml" "$data/metainfo/$app_id.metainfo.xml"
  install -Dm644 "$res/app/icon.svg" "$data/icons/hicolor/scalable/apps/$app_id.svg"
  for png in "$res"/app/icon-*.png; do
    size="$(basename "$png" .png)"; size="${size#icon-}"
    install -Dm644 "$png" "$data/icons/hicolor/${size}x${size}/apps/$app_id.png"
  done
fi

# Refresh the menu and icon caches where the tools exist; desktops also notice on their own.
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -qtf "$data/icons/hicolor" || true
echo "$( (( uninstall )) && echo removed || echo installed ) $app_id for $(id -un) under $data"
