#!/usr/bin/env bash
# Time to audio of relayed calls on a namespace network: network namespaces
# made here (a switch, the server, a relay, two users on 192.0.2.0/24, a
# range that exists only inside them), `umbra listen --auto-answer` on one
# host, `umbra call` on another, and the time from starting `umbra call` to
# its `hearing` event. Needs root. Usage: bench-call-netns.sh [ROUNDS]
# (UMBRA= the binary, default target/release/umbra).
set -euo pipefail
cd "$(dirname "$0")/.."
umbra="$(realpath "${UMBRA:-${CARGO_TARGET_DIR:-target}/release/umbra}")"
rounds="${1:-5}"
tag="ub$$"
dir="$(mktemp -d)"
hosts=()
cleanup() {
    pkill -f "$dir" 2>/dev/null || true
    for h in "${hosts[@]}" sw; do ip netns del "$tag$h" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "${tag}sw"
ip -n "${tag}sw" link add br0 type bridge
ip -n "${tag}sw" link set br0 up
host() {
    local h="$1" ip="$2" ns="$tag$1"
    ip netns add "$ns"; hosts+=("$h")
    ip link add "${ns}a" type veth peer name "${ns}b"
    ip link set "${ns}a" netns "$ns"; ip link set "${ns}b" netns "${tag}sw"
    ip -n "$ns" link set "${ns}a" name eth0
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up
    ip -n "${tag}sw" link set "${ns}b" master br0; ip -n "${tag}sw" link set "${ns}b" up
}
on() { local h="$1"; shift; ip netns exec "$tag$h" "$umbra" "$@"; }
host srv 192.0.2.1; host relay 192.0.2.11; host alice 192.0.2.21; host bob 192.0.2.22
echo "netns-bench-shared-secret-0123456789" > "$dir/secret"
on relay relay --auth-secret-file "$dir/secret" --udp-listen 192.0.2.11:3478 --tls-listen 192.0.2.11:5349 \
    > "$dir/relay.log" 2>&1 &
on srv server --listen 192.0.2.1:7700 --data-dir "$dir/server" --relay-secret-file "$dir/secret" \
    --relay-url 'turn:192.0.2.11:3478?transport=udp' > "$dir/server.log" 2>&1 &
for _ in $(seq 100); do grep -q "invite=umbra://" "$dir/server.log" 2>/dev/null && break; sleep 0.1; done
invite="$(grep -o 'invite=umbra://[^ ]*' "$dir/server.log" | head -1 | cut -d= -f2-)"
on alice --profile "$dir/alice" register --no-passphrase --invite "$invite" alice > /dev/null
on bob --profile "$dir/bob" register --no-passphrase --invite "$invite" bob > /dev/null
on bob --profile "$dir/bob" send alice "call me" > /dev/null
on alice --profile "$dir/alice" sync > /dev/null
on bob --profile "$dir/bob" settings protect-ip on > /dev/null
times=()
for i in $(seq "$rounds"); do
    on bob --profile "$dir/bob" --json listen --auto-answer --audio-in silence > "$dir/listen$i.log" 2>&1 &
    listener=$!
    sleep 1.5
    start=$(date +%s%N)
    ms=""
    while read -r line; do
        if [ -z "$ms" ] && [[ "$line" == *'"call":"hearing"'* ]]; then
            ms=$(( ($(date +%s%N) - start) / 1000000 ))
        fi
    done < <(on alice --profile "$dir/alice" --json call bob --duration 2)
    # The listener runs under `ip netns exec` in a background subshell: stop
    # the umbra process itself (SIGTERM: a graceful stop).
    pkill -TERM -f -- "--profile $dir/bob --json listen" 2>/dev/null || true
    wait "$listener" 2>/dev/null || true
    echo "call $i/$rounds: time to audio ${ms:-none} ms"
    [ -n "$ms" ] && times+=("$ms")
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
n=${#sorted[@]}
[ "$n" -gt 0 ] || { echo "no call went through" >&2; exit 1; }
echo "time to audio, relayed, namespace network: p50 ${sorted[$(( (n - 1) / 2 ))]} ms, max ${sorted[$(( n - 1 ))]} ms ($n calls)"
