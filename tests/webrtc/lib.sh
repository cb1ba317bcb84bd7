# Shared by with-coturn.sh and with-umbra-relay.sh: what starting a TURN
# server for the browser test takes, whichever server it is. Source it.

# A port free for both UDP and TCP, below the kernel's ephemeral range.
pick_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 12000))
        if [ -z "$(ss -Htuna "sport = :$p" 2>/dev/null)" ]; then echo "$p"; return; fi
    done
    echo "error: no free port found" >&2
    exit 1
}

# wait_listening PORT PID LOG: until PORT listens on UDP; fails (showing LOG)
# if the server exits first.
wait_listening() {
    local port="$1" pid="$2" log="$3"
    for _ in $(seq 100); do
        if ss -Hlnu "sport = :$port" 2>/dev/null | grep -q . ; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { echo "the TURN server exited:" >&2; cat "$log" >&2; exit 1; }
        sleep 0.1
    done
}

# mint_credential SECRET: sets $user and $pass in the TURN REST scheme
# (username "<expiry>:<token>", password base64(HMAC-SHA1(secret, username))).
mint_credential() {
    user="$(( $(date +%s) + 600 )):webrtc-test"
    pass="$(printf '%s' "$user" | openssl dgst -sha1 -hmac "$1" -binary | base64)"
}

# run_browser_test URL LOG [driver options...]: runs run.sh; on failure shows
# the tail of the server's LOG. Returns run.sh's exit code.
run_browser_test() {
    local url="$1" log="$2" rc
    shift 2
    set +e
    "$here/run.sh" "$url" "$user" "$pass" "$@"
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "---- server log ----" >&2
        tail -n 60 "$log" >&2
    fi
    return "$rc"
}
