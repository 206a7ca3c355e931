#!/usr/bin/env bash
# Packages the browser extension (extension/) for installation:
#   dist/clavitor-extension-<version>.zip          Chromium (Chrome, Edge, Brave: "Load unpacked"
#                                                  from the unzipped folder, or a store upload)
#   dist/clavitor-extension-<version>-firefox.zip  Firefox (about:debugging, or AMO signing)
# Both hold the same files. Only manifest.json differs, by removing what the other browser
# would warn about: the Chromium copy drops `browser_specific_settings` and `background.scripts`
# (Chromium runs the service worker), the Firefox copy drops `background.service_worker`
# (Firefox runs background.js as an event page). No bundler, no build step: the files are
# zipped as they are, with fixed timestamps so that the same tree gives the same zip.
# DIST_DIR overrides the output directory. Needs python3 (Debian's, for the zip and the JSON).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/extension"
dist="${DIST_DIR:-$root/dist}"
mkdir -p "$dist"
python3 - "$src" "$dist" <<'PY'
import json, os, sys, zipfile
src, dist = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(src, "manifest.json"), encoding="utf-8"))
version = manifest["version"]
files = sorted(f for f in os.listdir(src) if f != "manifest.json" and os.path.isfile(os.path.join(src, f)))

def variant(drop_top, drop_background):
    m = json.loads(json.dumps(manifest))
    for k in drop_top:
        m.pop(k, None)
    for k in drop_background:
        m["background"].pop(k, None)
    return json.dumps(m, indent=2, ensure_ascii=False) + "\n"

def write(name, manifest_text):
    path = os.path.join(dist, name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        def add(arcname, data):
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
        add("manifest.json", manifest_text.encode("utf-8"))
        for f in files:
            add(f, open(os.path.join(src, f), "rb").read())
    print(path)

write(f"clavitor-extension-{version}.zip", variant(["browser_specific_settings"], ["scripts"]))
write(f"clavitor-extension-{version}-firefox.zip", variant([], ["service_worker"]))
PY
