#!/usr/bin/env bash
# Vendors uPlot (https://github.com/leeoniya/uPlot, MIT) into inspector/views/static/vendor/ from the npm
# registry at a pinned version, checked against the registry's sha512. The history views inline these
# files into the widget's module and into History.to_html(): nothing is loaded from a CDN at runtime.
# Usage: scripts/vendor_uplot.sh   (needs npm, or curl for the tarball)
set -euo pipefail
VERSION=1.6.32
INTEGRITY=KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
HERE=$(cd "$(dirname "$0")/.." && pwd)
DEST="$HERE/inspector/views/static/vendor"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
if command -v npm >/dev/null; then
  npm pack --silent "uplot@$VERSION" >/dev/null 2>&1
else
  curl -fsSLo "uplot-$VERSION.tgz" "https://registry.npmjs.org/uplot/-/uplot-$VERSION.tgz"
fi
GOT=$(openssl dgst -sha512 -binary "uplot-$VERSION.tgz" | base64 -w0)
[ "$GOT" = "$INTEGRITY" ] || { echo "sha512 mismatch: $GOT" >&2; exit 1; }
tar xzf "uplot-$VERSION.tgz"
cp package/dist/uPlot.iife.min.js "$DEST/uplot.iife.min.js"
cp package/dist/uPlot.min.css "$DEST/uplot.min.css"
cp package/LICENSE "$DEST/uplot.LICENSE"
echo "uPlot $VERSION vendored into $DEST"
