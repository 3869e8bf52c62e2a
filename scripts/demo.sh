#!/usr/bin/env bash
# The dp-tcp demo: build if needed, two namespaces joined by four links, server
# and client up (config/*.links4.yaml), ping and ncat UDP through the tunnel, a
# 2 s outage of link 1 and then of links 1-3 at once under a running ping,
# per-link statistics, then a clean teardown (also on Ctrl-C or failure).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
dp_need_root demo
dp_install_missing
dp_build

export DPTCP_SERVER_NS=dp-tcp-server DPTCP_CLIENT_NS=dp-tcp-client
WORK=$(mktemp -d /tmp/dptcp-demo.XXXXXX)
PIDS=()
cleanup() {
  set +e
  echo "== teardown"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  bash scripts/namespace.sh down >/dev/null
  rm -rf "$WORK"
  echo "namespaces, TUN devices and processes removed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Has the client logged at least $1 'link up' lines? A grep cut short by Ctrl-C prints nothing,
# so the count defaults to 0 rather than reaching `[` empty ("integer expression expected").
ups_at_least() {
  local n
  n=$(grep -c 'link up' "$WORK/client.log" 2>/dev/null) || true
  [ "${n:-0}" -ge "$1" ]
}

echo "== two hosts, four links"
bash scripts/namespace.sh up
# namespace.sh makes links 1 and 2; links 3 and 4 the same way (removed with the namespaces).
for n in 3 4; do
  ip link add "link$n-s" netns dp-tcp-server type veth peer name "link$n-c" netns dp-tcp-client
  ip -n dp-tcp-server addr add "10.0.$n.1/24" dev "link$n-s"
  ip -n dp-tcp-client addr add "10.0.$n.2/24" dev "link$n-c"
  ip -n dp-tcp-server link set "link$n-s" up
  ip -n dp-tcp-client link set "link$n-c" up
done
echo "  and link3 10.0.3.1 <-> 10.0.3.2, link4 10.0.4.1 <-> 10.0.4.2"

echo "== a key pair for each side (dp-tcp genkey / pubkey), and the example configs pointed at them"
for side in server client; do
  (umask 077; node dist/cli/index.js genkey >"$WORK/$side.key")
done
SERVER_PUB=$(node dist/cli/index.js pubkey <"$WORK/server.key")
CLIENT_PUB=$(node dist/cli/index.js pubkey <"$WORK/client.key")
echo "  server public key $SERVER_PUB"
echo "  client public key $CLIENT_PUB"
for side in server client; do
  # The examples carry RFC 7748's test keys as placeholders: put the fresh ones in their place.
  sed -e "s#/etc/dp-tcp/#$WORK/#" \
    -e "s#hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=#$SERVER_PUB#" \
    -e "s#3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=#$CLIENT_PUB#" \
    "config/$side.links4.yaml" >"$WORK/$side.yaml"
done

echo "== starting server and client (config/*.links4.yaml: four links, peer keys, Noise IKpsk2 handshake, ChaCha20-Poly1305)"
ip netns exec dp-tcp-server node dist/cli/index.js server -c "$WORK/server.yaml" --log-format pretty >"$WORK/server.log" 2>&1 &
PIDS+=($!)
ip netns exec dp-tcp-client node dist/cli/index.js client -c "$WORK/client.yaml" --log-format pretty >"$WORK/client.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  ups_at_least 4 && break
  sleep 0.1
done
sed 's/^/  /' "$WORK/server.log" "$WORK/client.log"
ups_at_least 4 || { echo "demo: error: the links did not come up" >&2; exit 1; }

echo "== ping through the tunnel (client -> server, IPv4 and IPv6)"
ip netns exec dp-tcp-client ping -c 5 -i 0.2 10.0.0.1
ip netns exec dp-tcp-client ping -6 -c 3 -i 0.2 fd00:dd::1

echo "== ncat UDP through the tunnel, both directions"
ip netns exec dp-tcp-server ncat -u -l 10.0.0.1 9000 --recv-only >"$WORK/udp-at-server.txt" &
PIDS+=($!)
ip netns exec dp-tcp-client ncat -u -l 10.0.0.2 9001 --recv-only >"$WORK/udp-at-client.txt" &
PIDS+=($!)
sleep 0.5
echo "hello server, from the client (over all four links)" | ip netns exec dp-tcp-client ncat -u --send-only 10.0.0.1 9000
echo "hello client, from the server (over all four links)" | ip netns exec dp-tcp-server ncat -u --send-only 10.0.0.2 9001
sleep 0.5
echo "  server received: $(cat "$WORK/udp-at-server.txt")"
echo "  client received: $(cat "$WORK/udp-at-client.txt")"

echo "== link 1 blackholed for 2 s (iptables DROP at both ends) while pinging: no ping is lost"
ip netns exec dp-tcp-client ping -c 40 -i 0.1 -q 10.0.0.1 &
PING=$!
sleep 0.5
ip netns exec dp-tcp-client iptables -I INPUT -i link1-c -j DROP
ip netns exec dp-tcp-server iptables -I INPUT -i link1-s -j DROP
sleep 2
ip netns exec dp-tcp-client iptables -D INPUT -i link1-c -j DROP
ip netns exec dp-tcp-server iptables -D INPUT -i link1-s -j DROP
wait "$PING"

echo "== links 1, 2 and 3 blackholed together for 2 s while pinging: link 4 alone carries the tunnel"
ip netns exec dp-tcp-client ping -c 40 -i 0.1 -q 10.0.0.1 &
PING=$!
sleep 0.5
for n in 1 2 3; do
  ip netns exec dp-tcp-client iptables -I INPUT -i "link$n-c" -j DROP
  ip netns exec dp-tcp-server iptables -I INPUT -i "link$n-s" -j DROP
done
sleep 2
for n in 1 2 3; do
  ip netns exec dp-tcp-client iptables -D INPUT -i "link$n-c" -j DROP
  ip netns exec dp-tcp-server iptables -D INPUT -i "link$n-s" -j DROP
done
wait "$PING"
for _ in $(seq 50); do  # back up: four links again
  ups_at_least 8 && break
  sleep 0.1
done
grep -E 'link (down|up)' "$WORK/client.log" | tail -n +5 | sed 's/^/  /' || true

echo "== dp-tcp status on each side (every packet went over every link; the later copies were eliminated)"
ip netns exec dp-tcp-client node dist/cli/index.js status --role client -c "$WORK/client.yaml"
ip netns exec dp-tcp-server node dist/cli/index.js status --role server -c "$WORK/server.yaml"
