#!/usr/bin/env bash
# Builds the prebuilt addons the package ships: prebuilds/linux-<arch>/dptcp.glibc.node
# for x64 and arm64 (glibc), the one that is not this machine's with a cross compiler
# (Debian: apt-get install g++-aarch64-linux-gnu, or g++-x86-64-linux-gnu on arm64).
# Each is built in a directory of its own under build/, never in build/Release
# (the checkout's own addon), then checked (ELF machine; a test load for this machine's)
# and moved into place.
#   npm run build:prebuilds                 both architectures; a missing compiler is an error
#   DPTCP_PREBUILD_ARCHS=x64 npm run build:prebuilds   only those
#   DPTCP_PREBUILD_ALLOW_MISSING=1          skip (with a warning) an architecture whose compiler is missing
# npm pack runs this (prepack) strictly, so a tarball never lacks an architecture silently.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

archs=${DPTCP_PREBUILD_ARCHS:-x64 arm64}
allow_missing=${DPTCP_PREBUILD_ALLOW_MISSING:-0}

# node-gyp: the one npm runs scripts with, else the one bundled with npm.
if [ -n "${npm_config_node_gyp:-}" ] && [ -f "$npm_config_node_gyp" ]; then
  gyp=(node "$npm_config_node_gyp")
elif command -v node-gyp >/dev/null 2>&1; then
  gyp=(node-gyp)
else
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  gyp=(node "$npm_dir/node_modules/node-gyp/bin/node-gyp.js")
  [ -f "${gyp[1]}" ] || { echo "prebuild: error: node-gyp not found (it comes with npm)" >&2; exit 1; }
fi

# Headers: the running Node's own when they are installed next to it (/usr/include/node
# for Debian's nodejs, include/node in an official tarball), so nothing is downloaded.
# An N-API addon built against them loads in every Node with N-API 8.
# node-gyp takes npm_config_nodedir from the environment over its arguments, so
# that is what is set (an empty one would make it download headers).
if [ -z "${npm_config_nodedir:-}" ]; then
  unset npm_config_nodedir
  nd=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [ -f "$nd/include/node/node_api.h" ]; then export npm_config_nodedir=$nd; fi
fi

case "$(uname -m)" in
  x86_64) host=x64 ;;
  aarch64) host=arm64 ;;
  *) host=$(uname -m) ;;
esac

# The GNU triplet of a Node arch, and the words `file` prints for it.
triplet() { case "$1" in x64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; *) return 1 ;; esac; }
debpkg() { case "$1" in x64) echo g++-x86-64-linux-gnu ;; arm64) echo g++-aarch64-linux-gnu ;; esac; }
# ELF e_machine: EM_X86_64 62, EM_AARCH64 183 (so `file` need not be installed).
machine() { case "$1" in x64) echo 62 ;; arm64) echo 183 ;; esac; }
elf_machine() { node -e 'const b = require("fs").readFileSync(process.argv[1]); console.log(b.readUInt32BE(0) === 0x7f454c46 ? b.readUInt16LE(18) : -1)' "$1"; }

built=()
for arch in $archs; do
  t=$(triplet "$arch") || { echo "prebuild: error: unknown architecture '$arch' (x64, arm64)" >&2; exit 1; }
  if [ "$arch" = "$host" ]; then
    cc=gcc cxx=g++ ar=ar strip=strip objdump=objdump
  else
    cc=$t-gcc cxx=$t-g++ ar=$t-ar strip=$t-strip objdump=$t-objdump
  fi
  if ! command -v "$cxx" >/dev/null 2>&1; then
    msg="no C++ compiler for linux-$arch ($cxx): install it (Debian: apt-get install $(debpkg "$arch"))"
    if [ "$allow_missing" = 1 ]; then echo "prebuild: warning: $msg; linux-$arch skipped" >&2; continue; fi
    echo "prebuild: error: $msg, or set DPTCP_PREBUILD_ARCHS / DPTCP_PREBUILD_ALLOW_MISSING=1 to leave it out" >&2
    exit 1
  fi
  stage="$root/build/prebuild-$arch"
  rm -rf "$stage"
  mkdir -p "$stage"
  cp -r binding.gyp native "$stage/"
  echo "== prebuild linux-$arch ($cxx)"
  if ! (cd "$stage" && CC=$cc CXX=$cxx LINK=$cxx AR=$ar "${gyp[@]}" rebuild --arch="$arch" -j "$(nproc)" >build.log 2>&1); then
    tail -30 "$stage/build.log" >&2
    echo "prebuild: error: building linux-$arch failed (log: $stage/build.log)" >&2
    exit 1
  fi
  out="$stage/build/Release/dptcp.node"
  "$strip" --strip-unneeded "$out"
  if [ "$(elf_machine "$out")" != "$(machine "$arch")" ]; then
    echo "prebuild: error: $out is not a linux-$arch ELF object (e_machine $(elf_machine "$out"))" >&2
    exit 1
  fi
  if [ "$arch" = "$host" ]; then
    node -e "require(process.argv[1])" "$out" || { echo "prebuild: error: the linux-$arch addon does not load" >&2; exit 1; }
  fi
  dest="prebuilds/linux-$arch"
  mkdir -p "$dest"
  mv -f "$out" "$dest/dptcp.glibc.node.tmp"
  mv -f "$dest/dptcp.glibc.node.tmp" "$dest/dptcp.glibc.node"
  rm -rf "$stage"
  # The newest symbol versions it asks of glibc and libstdc++ bound the systems it loads on
  # (README, "Installing"): printed, so a build machine that raises them is noticed.
  needs=""
  od=$objdump
  if command -v "$od" >/dev/null 2>&1; then
    needs=$("$od" -T "$dest/dptcp.glibc.node" | grep -oE '(GLIBC|GLIBCXX)_[0-9.]+' | sort -uV |
      awk -F_ '{m[$1]=$0} END {printf "; needs %s, %s", m["GLIBC"], m["GLIBCXX"]}')
  fi
  echo "   $dest/dptcp.glibc.node ($(stat -c %s "$dest/dptcp.glibc.node") bytes$needs)"
  built+=("$arch")
done
[ ${#built[@]} -gt 0 ] || { echo "prebuild: error: no addon was built" >&2; exit 1; }
