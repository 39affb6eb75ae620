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
# shellcheck source=scripts/demo-lib.sh
. "$SRC/scripts/demo-lib.sh"
demo_init nginx module/nginx/ngx_http_autotls_module.so nginx-dev "$@"
NGINX_STARTED=
cleanup() {
    if [ -n "$NGINX_STARTED" ]; then
        nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -s quit 2>/dev/null || true
        for _ in $(seq 100); do [ -f "$WORK/nginx/nginx.pid" ] || break; sleep 0.1; done
    fi
    demo_cleanup
}
trap cleanup EXIT

demo_start_ca "1/4"

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
demo_wait_cert "$WORK/nginx/error.log"

step "4/4 HTTPS with the new certificate, verified against Pebble's root"
demo_https
demo_https "/autotls-status?format=prometheus"
echo
echo "demo done: nginx serves a certificate for ${NAMES[*]} from a local ACME CA"
