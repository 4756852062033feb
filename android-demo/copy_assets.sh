#!/bin/sh
# Put an exported model and its manifest into the Android app (make android-assets RUN=...):
#
#   sh android-demo/copy_assets.sh RUN [MODEL_FILE]
#
# copies RUN/export/MODEL_FILE (default model_fp32.tflite) and RUN/export/manifest.json into
# android-demo/app/src/main/assets/ (ASSETS_DIR overrides the destination), after checking that
# the manifest lists the file with the same sha256. Other .tflite files there are removed, so the
# app finds exactly one model. The assets folder is git-ignored: models are never committed.
set -eu

usage() {
    echo "usage: sh android-demo/copy_assets.sh RUN [MODEL_FILE]   (MODEL_FILE default: model_fp32.tflite)" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
run=$1
model=${2:-model_fp32.tflite}
export_dir=$run/export
manifest=$export_dir/manifest.json
assets=${ASSETS_DIR:-$(dirname "$0")/app/src/main/assets}

[ -f "$manifest" ] || { echo "copy_assets: $manifest not found (run: facemark export $run --format tflite)" >&2; exit 1; }
[ -f "$export_dir/$model" ] || { echo "copy_assets: $export_dir/$model not found (run: facemark export $run --format tflite)" >&2; exit 1; }
grep -q "\"file\": \"$model\"" "$manifest" || {
    echo "copy_assets: $manifest lists no artifact with file $model" >&2; exit 1; }

if command -v sha256sum >/dev/null 2>&1; then
    digest=$(sha256sum "$export_dir/$model" | cut -d' ' -f1)
else
    digest=$(shasum -a 256 "$export_dir/$model" | cut -d' ' -f1)   # macOS
fi
grep -q "\"sha256\": \"$digest\"" "$manifest" || {
    echo "copy_assets: $export_dir/$model does not match the sha256 in $manifest (modified after export?)" >&2
    exit 1; }

mkdir -p "$assets"
rm -f "$assets"/*.tflite
cp "$export_dir/$model" "$manifest" "$assets/"
echo "copy_assets: $model + manifest.json -> $assets"
