#!/usr/bin/env bash
# Two network namespaces joined by two veth links, the original's topology:
#   server ns  link1-s 10.0.1.1/24 <---> link1-c 10.0.1.2/24  client ns
#   server ns  link2-s 10.0.2.1/24 <---> link2-c 10.0.2.2/24  client ns
# Names can be changed with DPTCP_SERVER_NS / DPTCP_CLIENT_NS (tests do).
set -euo pipefail

SERVER_NS="${DPTCP_SERVER_NS:-dp-tcp-server}"
CLIENT_NS="${DPTCP_CLIENT_NS:-dp-tcp-client}"

usage() {
  echo "usage: $0 up | down | server-ns | client-ns" >&2
  echo "  up         create both namespaces and the two links (replacing old ones)" >&2
  echo "  down       delete both namespaces (and with them every device inside)" >&2
  echo "  server-ns  open a shell in the server namespace" >&2
  echo "  client-ns  open a shell in the client namespace" >&2
  exit 2
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: error: network namespaces need root: run it as root or with sudo" >&2
    exit 1
  fi
  command -v ip >/dev/null || { echo "$0: error: 'ip' (iproute2) is not installed" >&2; exit 1; }
}

down() {
  ip netns delete "$SERVER_NS" 2>/dev/null || true
  ip netns delete "$CLIENT_NS" 2>/dev/null || true
}

up() {
  down
  ip netns add "$SERVER_NS"
  ip netns add "$CLIENT_NS"
  trap 'down' ERR
  for n in 1 2; do
    # Created directly inside the namespaces: nothing ever appears in the caller's.
    ip link add "link$n-s" netns "$SERVER_NS" type veth peer name "link$n-c" netns "$CLIENT_NS"
    ip -n "$SERVER_NS" addr add "10.0.$n.1/24" dev "link$n-s"
    ip -n "$CLIENT_NS" addr add "10.0.$n.2/24" dev "link$n-c"
    ip -n "$SERVER_NS" link set "link$n-s" up
    ip -n "$CLIENT_NS" link set "link$n-c" up
  done
  ip -n "$SERVER_NS" link set lo up
  ip -n "$CLIENT_NS" link set lo up
  trap - ERR
  echo "namespaces up: $SERVER_NS (10.0.1.1, 10.0.2.1) <-> $CLIENT_NS (10.0.1.2, 10.0.2.2)"
}

[ $# -eq 1 ] || usage
case "$1" in
  up) need_root; up ;;
  down) need_root; down; echo "namespaces removed: $SERVER_NS $CLIENT_NS" ;;
  server-ns) need_root; exec ip netns exec "$SERVER_NS" "${SHELL:-bash}" ;;
  client-ns) need_root; exec ip netns exec "$CLIENT_NS" "${SHELL:-bash}" ;;
  *) usage ;;
esac
