#!/usr/bin/env bash
# Builds the device-loop addon (native/device-loop.cc, with its CUDA operators whose kernels NVRTC compiles at
# run time) into native/build/genqueue_device_loop.node.
# ONNX Runtime's C API headers come from Debian trixie's libonnxruntime-dev (1.21; the C API is versioned and
# the 1.29 library onnxruntime-node ships serves it), fetched here with apt-get download into native/.ort-headers
# (git-ignored, never vendored) from the Debian mirror the machine's own apt sources use
# (GENQUEUE_DEBIAN_MIRROR overrides it). Node-API headers come from the node-api-headers npm package.
# Nothing is linked but libdl: the ONNX Runtime library is dlopen'ed at run time from onnxruntime-node.
# Sourcing it (the tests do) only defines the functions.
set -euo pipefail

# Prints the URI of the machine's Debian archive: the first deb source (deb822 *.sources files, then one-line
# sources.list / *.list entries) that serves the release named in os-release, so its -updates and -security
# siblings and third-party repositories are passed over. $1 is a root directory (tests use a fake one).
debian_mirror() {
  local root=${1:-} codename=""
  if [ -r "$root/etc/os-release" ]; then
    codename=$(. "$root/etc/os-release" && echo "${VERSION_CODENAME:-}")
  fi
  if [ -z "$codename" ]; then
    echo "native/build.sh: no VERSION_CODENAME in $root/etc/os-release; set GENQUEUE_DEBIAN_MIRROR" >&2
    return 1
  fi
  local files=() f
  for f in "$root"/etc/apt/sources.list.d/*.sources; do [ -r "$f" ] && files+=("$f"); done
  local uri=""
  if [ ${#files[@]} -gt 0 ]; then
    uri=$(awk -v want="$codename" '
      function flush() {
        if (!found && enabled != "no" && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1 }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      FNR == 1 { flush() }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { line = $0; key = tolower(line); sub(/:.*/, "", key); sub(/^[^:]*:[ \t]*/, "", line); gsub(/[ \t]+/, " ", line) }
      key == "types" { types = line } key == "uris" { uris = line } key == "suites" { suites = line }
      key == "enabled" { enabled = tolower(line) }
      END { flush() }
    ' "${files[@]}")
  fi
  if [ -z "$uri" ]; then
    files=()
    for f in "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*.list; do [ -r "$f" ] && files+=("$f"); done
    if [ ${#files[@]} -gt 0 ]; then
      uri=$(awk -v want="$codename" '
        $1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i + 1) == want) { print $i; exit } }
      ' "${files[@]}")
    fi
  fi
  if [ -z "$uri" ]; then
    echo "native/build.sh: no apt source for Debian $codename in $root/etc/apt; set GENQUEUE_DEBIAN_MIRROR" >&2
    return 1
  fi
  echo "${uri%/}"
}

# Downloads libonnxruntime-dev from Debian trixie on the given mirror, with a private apt state (the machine's
# own lists and cache stay untouched, no root needed), and unpacks it into $2. A subshell, so that its EXIT
# trap removes the scratch directory on every path.
fetch_ort_headers() (
  mirror=$1 dest=$2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/sources"
  cat > "$work/sources/trixie.sources" <<SRC
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources" -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1 -o "APT::Sandbox::User=$(id -un)")
  echo "fetching libonnxruntime-dev headers (Debian trixie from $mirror)"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && apt-get "${apt_opts[@]}" download -qq libonnxruntime-dev)
  rm -rf "$dest" && dpkg -x "$work"/libonnxruntime-dev_*.deb "$dest"
)

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")"
  local headers=.ort-headers/usr/include/onnxruntime
  if [ ! -f "$headers/onnxruntime_c_api.h" ]; then
    local mirror=${GENQUEUE_DEBIAN_MIRROR:-}
    [ -n "$mirror" ] || mirror=$(debian_mirror)
    fetch_ort_headers "$mirror" .ort-headers
  fi
  local napi
  napi=$(node -p "require('node-api-headers').include_dir")
  mkdir -p build
  g++ -std=c++17 -O2 -fPIC -shared -Wall -Wextra -DNAPI_VERSION=8 -DNODE_GYP_MODULE_NAME=genqueue_device_loop \
    -I "$napi" -I "$headers" *.cc -o build/genqueue_device_loop.node \
    -ldl -static-libstdc++ -static-libgcc -Wl,--unresolved-symbols=ignore-all
  echo "built native/build/genqueue_device_loop.node"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
