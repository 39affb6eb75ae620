#!/bin/bash
# The nginx demo: Debian's nginx with the built ngx_http_autotls_module gets a
# certificate from a local test CA (Pebble, with pebble-challtestsrv as its
# DNS) on loopback, serves it without a reload, and stops again.
#
#   module/nginx/demo.sh BUILD_DIR [http-01 | tls-alpn-01]
#
# BUILD_DIR is a configured and built build directory (the module is
# module/nginx/ngx_http_autotls_module.so there). Run as root: nginx's
# workers run as www-data, as on a real server. Nothing leaves the machine:
# Pebble resolves every name to 127.0.0.1 and validates against nginx's ports.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: $0 BUILD_DIR [http-01 | tls-alpn-01]}" && pwd)
CHALLENGE=${2:-http-01}
MODULE=$BUILD/module/nginx/ngx_http_autotls_module.so
NAMES=(demo.example.com www.demo.example.com)

case $CHALLENGE in
    http-01|tls-alpn-01) ;;
    *) echo "usage: $0 BUILD_DIR [http-01 | tls-alpn-01]" >&2; exit 2 ;;
esac
[ -f "$MODULE" ] || { echo "$MODULE is missing: build with nginx-dev installed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/autotls-nginx-demo.XXXXXX)
chmod 755 "$WORK"
CA_PID= NGINX_STARTED=
cleanup() {
    if [ -n "$NGINX_STARTED" ]; then
        nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -s quit 2>/dev/null || true
        for _ in $(seq 100); do [ -f "$WORK/nginx/nginx.pid" ] || break; sleep 0.1; done
    fi
    if [ -n "$CA_PID" ]; then
        kill -TERM "$CA_PID" 2>/dev/null || true
        wait "$CA_PID" 2>/dev/null || true
    fi
    if [ -z "${AUTOTLS_KEEP_TMP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
run() {
    printf '$ %s\n' "$*"
    "$@" || { local rc=$?; echo "demo: failed (exit $rc): $*" >&2; exit $rc; }
}

step "1/4 start Pebble and pebble-challtestsrv on 127.0.0.1"
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

step "2/4 nginx with one server block: autotls on; (${CHALLENGE})"
mkdir -p "$WORK/nginx/html" "$WORK/nginx/tmp"
echo "hello from nginx" > "$WORK/nginx/html/index.html"
cat > "$WORK/nginx/nginx.conf" <<EOF
load_module $MODULE;
user www-data;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log notice;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp;
    ssl_protocols TLSv1.2 TLSv1.3;

    autotls_ca $PEBBLE_DIRECTORY;
    autotls_ca_trust $PEBBLE_CA_TRUST;
    autotls_contact admin@example.com;
    autotls_accept_terms on;
    autotls_store $WORK/nginx/store;

    server {
        listen 127.0.0.1:$PEBBLE_HTTP_PORT;
        server_name ${NAMES[*]};
        return 301 https://\$host\$request_uri;
    }
    server {
        listen 127.0.0.1:$PEBBLE_TLS_PORT ssl;
        server_name ${NAMES[*]};
        root $WORK/nginx/html;
        autotls_challenges $CHALLENGE;
        autotls on;
        location = /autotls-status { autotls_status; allow 127.0.0.1; deny all; }
    }
}
EOF
sed -n '/server {/,$p' "$WORK/nginx/nginx.conf"
run nginx -t -q -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf"
run nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf"
NGINX_STARTED=1

step "3/4 the certificate arrives, without a reload"
got=
for _ in $(seq 600); do
    if echo | openssl s_client -connect "127.0.0.1:$PEBBLE_TLS_PORT" -servername "${NAMES[0]}" \
            -verify_return_error -CAfile "$PEBBLE_ROOT" > "$WORK/s_client.txt" 2>&1; then
        got=1
        break
    fi
    sleep 0.1
done
[ -n "$got" ] || { tail -n 30 "$WORK/nginx/error.log"; echo "no certificate within 60s" >&2; exit 1; }
grep -E "autotls" "$WORK/nginx/error.log" | tail -n 5
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$WORK/s_client.txt" > "$WORK/leaf.pem"
run openssl x509 -in "$WORK/leaf.pem" -noout -subject -issuer -dates -ext subjectAltName

step "4/4 HTTPS with the new certificate, verified against Pebble's root"
for name in "${NAMES[@]}"; do
    run curl -sS --cacert "$PEBBLE_ROOT" --resolve "$name:$PEBBLE_TLS_PORT:127.0.0.1" \
        "https://$name:$PEBBLE_TLS_PORT/"
done
run curl -sS --cacert "$PEBBLE_ROOT" --resolve "${NAMES[0]}:$PEBBLE_TLS_PORT:127.0.0.1" \
    "https://${NAMES[0]}:$PEBBLE_TLS_PORT/autotls-status?format=prometheus"
echo
echo "demo done: nginx serves a certificate for ${NAMES[*]} from a local ACME CA"
