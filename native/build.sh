#!/usr/bin/env bash
# Builds the device-loop addon (native/device-loop.cc, with its CUDA operators whose kernels NVRTC compiles at
# run time) into native/build/genqueue_device_loop.node.
# ONNX Runtime's C API headers come from Debian trixie's libonnxruntime-dev (1.21; the C API is versioned and
# the 1.29 library onnxruntime-node ships serves it), fetched here with apt-get download into native/.ort-headers
# (git-ignored, never vendored). Node-API headers come from the node-api-headers npm package.
# Nothing is linked but libdl: the ONNX Runtime library is dlopen'ed at run time from onnxruntime-node.
set -euo pipefail
cd "$(dirname "$0")"
HEADERS=.ort-headers/usr/include/onnxruntime
if [ ! -f "$HEADERS/onnxruntime_c_api.h" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/sources"
  cat > "$work/sources/trixie.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources" -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1 -o "APT::Sandbox::User=$(id -un)")
  echo "fetching libonnxruntime-dev headers (Debian trixie)"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" download -qq libonnxruntime-dev)
  rm -rf .ort-headers && dpkg -x "$work"/libonnxruntime-dev_*.deb .ort-headers
fi
NAPI=$(node -p "require('node-api-headers').include_dir")
mkdir -p build
g++ -std=c++17 -O2 -fPIC -shared -Wall -Wextra -DNAPI_VERSION=8 -DNODE_GYP_MODULE_NAME=genqueue_device_loop \
  -I "$NAPI" -I "$HEADERS" *.cc -o build/genqueue_device_loop.node \
  -ldl -static-libstdc++ -static-libgcc -Wl,--unresolved-symbols=ignore-all
echo "built native/build/genqueue_device_loop.node"
