#!/usr/bin/env bash
# Builds the WAN emulator (wanem, on NFQUEUE) and its UDP probe (wanprobe) into OUT
# (default build/wanem/), only when a source is newer than its binary. Safe to run
# from several processes at once: each binary is written aside and renamed into place.
# The tests and bench:wan build into a temp dir named by the sources' hash instead
# (test/helpers/wan.ts wanTools()), since `node-gyp rebuild` empties build/.
# Needs cc and libnetfilter-queue-dev (scripts/lib.sh dp_install_missing installs it).
set -euo pipefail
SRC=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$SRC/../../build/wanem}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CFLAGS=(-std=gnu11 -Wall -Wextra -Werror -O2)
build() { # build NAME LIBS...
  local name=$1; shift
  if [ ! -x "$OUT/$name" ] || [ "$SRC/$name.c" -nt "$OUT/$name" ]; then
    cc "${CFLAGS[@]}" -o "$OUT/$name.tmp.$$" "$SRC/$name.c" "$@"
    mv -f "$OUT/$name.tmp.$$" "$OUT/$name"
  fi
}
if [ ! -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ]; then
  echo "build.sh: libnetfilter_queue.h is missing: apt-get install -y libnetfilter-queue-dev" >&2
  exit 1
fi
build wanem -lnetfilter_queue -lnfnetlink -lm
build wanprobe
echo "$OUT"
