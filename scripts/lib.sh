# Shared by demo.sh, test.sh and .ci/run. Source it; do not run it.

# Root is needed for namespaces and TUN devices; say so plainly.
dp_need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: error: this needs root (network namespaces, TUN devices): run it as root or with sudo" >&2
    exit 1
  fi
}

# Installs the Debian packages whose commands are missing (root only).
# `--cross` adds the cross compiler for the other prebuilt architecture
# (x64 <-> arm64), which npm pack needs (scripts/prebuild.sh; the package test packs).
dp_install_missing() {
  local missing=() pair pairs=()
  if [ "${1:-}" = --cross ]; then
    case "$(uname -m)" in
      x86_64) pairs+=(aarch64-linux-gnu-g++:g++-aarch64-linux-gnu) ;;
      aarch64) pairs+=(x86_64-linux-gnu-g++:g++-x86-64-linux-gnu) ;;
    esac
  fi
  for pair in ip:iproute2 tc:iproute2 ss:iproute2 iptables:iptables ncat:ncat iperf3:iperf3 \
    ping:iputils-ping tcpdump:tcpdump wg:wireguard-tools setpriv:util-linux runuser:util-linux g++:g++ make:make python3:python3 "${pairs[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # the WAN emulator (scripts/wanem) is built against libnetfilter-queue
  [ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || missing+=(libnetfilter-queue-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  fi
  if [ ! -e /dev/net/tun ]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200
  fi
}

# Runs a command as the user who called sudo, so the checkout stays theirs.
dp_as_user() {
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then runuser -u "$SUDO_USER" -- "$@"; else "$@"; fi
}

# npm ci when node_modules is missing or older than the lock file; then the build.
dp_build() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "== npm ci (dependencies, native addon, TypeScript)"
    dp_as_user npm ci --no-audit --no-fund
  fi
  if [ ! -f build/Release/dptcp.node ] || [ -n "$(find native binding.gyp -newer build/Release/dptcp.node 2>/dev/null)" ]; then
    echo "== building the native addon"
    dp_as_user npm run build:native
  fi
  dp_as_user npm run --silent build:ts
}
