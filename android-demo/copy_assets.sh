#!/bin/sh
# Put a model and its manifest into the Android app (make android-assets [RUN=...]):
#
#   sh android-demo/copy_assets.sh                      the shipped 68-point model (facemark/pretrained/ibug68)
#   sh android-demo/copy_assets.sh MODEL_DIR [FILE]     a packaged model folder (facemark package), or
#   sh android-demo/copy_assets.sh RUN [MODEL_FILE]     a run: RUN/export/MODEL_FILE (default model_fp32.tflite)
#
# A folder with manifest.json is a packaged model (its .tflite file by default); otherwise the
# folder is a RUN and its export/ is used. The files are copied with the manifest into
# android-demo/app/src/main/assets/ (ASSETS_DIR overrides the destination), after checking that
# the manifest lists the file with the same sha256. Other .tflite files there are removed, so the
# app finds exactly one model. The assets folder is git-ignored: models are never committed there.
set -eu

usage() {
    echo "usage: sh android-demo/copy_assets.sh [RUN|MODEL_DIR] [MODEL_FILE]   (default: the shipped ibug68)" >&2
    exit 2
}

[ $# -le 2 ] || usage
source=${1:-$(dirname "$0")/../facemark/pretrained/ibug68}
if [ -f "$source/manifest.json" ]; then
    export_dir=$source
    default_model=$(cd "$source" && ls -- *.tflite 2>/dev/null | head -n 1)
else
    export_dir=$source/export
    default_model=model_fp32.tflite
fi
model=${2:-$default_model}
manifest=$export_dir/manifest.json
assets=${ASSETS_DIR:-$(dirname "$0")/app/src/main/assets}

[ -f "$manifest" ] || { echo "copy_assets: $manifest not found (run: facemark export $source --format tflite)" >&2; exit 1; }
[ -n "$model" ] && [ -f "$export_dir/$model" ] || {
    echo "copy_assets: $export_dir/$model not found (run: facemark export $source --format tflite)" >&2; exit 1; }
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
