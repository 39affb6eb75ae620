# shellcheck shell=bash
# demo-lib.sh: what the server demos share (module/apache/demo.sh and
# module/nginx/demo.sh source it): their arguments, a work directory, steps
# shown as they run, a local Pebble on loopback, waiting for the first
# certificate, and fetching the site over HTTPS. Needs bash and SRC (the
# source tree).

NAMES=(demo.example.com www.demo.example.com)
CA_PID=

# demo_init SERVER MODULE DEV_PACKAGE BUILD_DIR [CHALLENGE]: check the
# arguments and the built module (MODULE, relative to BUILD_DIR), make the
# work directory. Sets BUILD, CHALLENGE, MODULE and WORK.
demo_init() {
    local server=$1 module=$2 dev=$3 usage="usage: $0 BUILD_DIR [http-01 | tls-alpn-01]"
    shift 3
    [ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
    BUILD=$(cd "$1" && pwd)
    CHALLENGE=${2:-http-01}
    MODULE=$BUILD/$module
    case $CHALLENGE in
        http-01|tls-alpn-01) ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    [ -f "$MODULE" ] || { echo "$MODULE is missing: build with $dev installed" >&2; exit 1; }
    WORK=$(mktemp -d "/tmp/autotls-$server-demo.XXXXXX")
    chmod 755 "$WORK"
}

step() { printf '\n== %s\n' "$*"; }

# run CMD...: show the command, run it, and name it if it fails.
run() {
    printf '$ %s\n' "$*"
    "$@" || { local rc=$?; echo "demo: failed (exit $rc): $*" >&2; exit $rc; }
}

# After the server has stopped: stop the CA and remove the work directory
# (kept, and named, with AUTOTLS_KEEP_TMP set).
demo_cleanup() {
    if [ -n "$CA_PID" ]; then
        kill -TERM "$CA_PID" 2>/dev/null || true
        wait "$CA_PID" 2>/dev/null || true
    fi
    if [ -z "${AUTOTLS_KEEP_TMP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}

# demo_start_ca STEP: Pebble and pebble-challtestsrv on 127.0.0.1; their
# addresses come as PEBBLE_* variables (pebble.env).
demo_start_ca() {
    step "$1 start Pebble and pebble-challtestsrv on 127.0.0.1"
    /usr/bin/python3 "$SRC/tests/integration/pebble.py" --workdir "$WORK/ca" > "$WORK/ca.log" 2>&1 &
    CA_PID=$!
    for _ in $(seq 300); do
        [ -f "$WORK/ca/pebble.env" ] && break
        kill -0 "$CA_PID" 2>/dev/null || { cat "$WORK/ca.log"; echo "Pebble did not start" >&2; exit 1; }
        sleep 0.1
    done
    [ -f "$WORK/ca/pebble.env" ] || { cat "$WORK/ca.log"; echo "Pebble did not start within 30s" >&2; exit 1; }
    # shellcheck source=/dev/null
    . "$WORK/ca/pebble.env"
    chmod -R a+rX "$WORK/ca"
    echo "ACME directory: $PEBBLE_DIRECTORY"
}

# demo_wait_cert ERROR_LOG: wait (at most a minute) until the HTTPS port
# presents a certificate that verifies against Pebble's root; show the
# server's last autotls lines and the certificate.
demo_wait_cert() {
    local got=
    for _ in $(seq 600); do
        if echo | openssl s_client -connect "127.0.0.1:$PEBBLE_TLS_PORT" -servername "${NAMES[0]}" \
                -verify_return_error -CAfile "$PEBBLE_ROOT" > "$WORK/s_client.txt" 2>&1; then
            got=1
            break
        fi
        sleep 0.1
    done
    [ -n "$got" ] || { tail -n 30 "$1"; echo "no certificate within 60s" >&2; exit 1; }
    sleep 0.5    # nginx writes the renewal thread's lines a moment later
    { grep -E "autotls" "$1" || true; } | tail -n 5
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$WORK/s_client.txt" > "$WORK/leaf.pem"
    run openssl x509 -in "$WORK/leaf.pem" -noout -subject -issuer -dates -ext subjectAltName
}

# demo_https [PATH]: every name's site (or PATH on the first name) over
# HTTPS, verified against Pebble's root.
demo_https() {
    local name names=("${NAMES[@]}")
    [ $# -gt 0 ] && names=("${NAMES[0]}")
    for name in "${names[@]}"; do
        run curl -sS --cacert "$PEBBLE_ROOT" --resolve "$name:$PEBBLE_TLS_PORT:127.0.0.1" \
            "https://$name:$PEBBLE_TLS_PORT${1:-/}"
    done
}
