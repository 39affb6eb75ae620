#!/bin/bash
# The Apache demo: Debian's apache2 with the built mod_autotls gets a
# certificate from a local test CA (Pebble, with pebble-challtestsrv as its
# DNS) on loopback, serves it without a restart, shows the status page, and
# stops again.
#
#   module/apache/demo.sh BUILD_DIR [http-01 | tls-alpn-01]
#
# BUILD_DIR is a configured and built build directory (the module is
# module/apache/mod_autotls.so there). Run as root: the children run as
# www-data, as on a real server. Nothing leaves the machine: Pebble resolves
# every name to 127.0.0.1 and validates against Apache's ports.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: $0 BUILD_DIR [http-01 | tls-alpn-01]}" && pwd)
CHALLENGE=${2:-http-01}
MODULE=$BUILD/module/apache/mod_autotls.so
MODULES=/usr/lib/apache2/modules
NAMES=(demo.example.com www.demo.example.com)

case $CHALLENGE in
    http-01|tls-alpn-01) ;;
    *) echo "usage: $0 BUILD_DIR [http-01 | tls-alpn-01]" >&2; exit 2 ;;
esac
[ -f "$MODULE" ] || { echo "$MODULE is missing: build with apache2-dev installed" >&2; exit 1; }

WORK=$(mktemp -d /tmp/autotls-apache-demo.XXXXXX)
chmod 755 "$WORK"
CA_PID= APACHE_STARTED=
cleanup() {
    if [ -n "$APACHE_STARTED" ]; then
        apache2 -d "$WORK/apache" -f "$WORK/apache/apache2.conf" -k stop 2>/dev/null || true
        for _ in $(seq 100); do [ -f "$WORK/apache/run/apache2.pid" ] || break; sleep 0.1; done
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

step "1/5 start Pebble and pebble-challtestsrv on 127.0.0.1"
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

step "2/5 Apache with one virtual host: AutoTLS on (${CHALLENGE})"
A=$WORK/apache
mkdir -p "$A/run" "$A/logs" "$A/htdocs"
echo "hello from apache" > "$A/htdocs/index.html"
loads=
for m in mpm_event authz_core authz_host ssl socache_shmcb status alias dir mime; do
    loads+="LoadModule ${m}_module $MODULES/mod_${m}.so"$'\n'
done
cat > "$A/apache2.conf" <<EOF
ServerRoot "$A"
DefaultRuntimeDir "$A/run"
PidFile "$A/run/apache2.pid"
Mutex file:$A/run default
${loads}LoadModule autotls_module "$MODULE"
User www-data
Group www-data
ServerName localhost
Listen 127.0.0.1:$PEBBLE_HTTP_PORT
Listen 127.0.0.1:$PEBBLE_TLS_PORT https
ErrorLog "$A/logs/error.log"
LogLevel warn autotls:info
DocumentRoot "$A/htdocs"
<Directory "$A/htdocs">
    Require all granted
</Directory>
TypesConfig /etc/mime.types
SSLSessionCache "shmcb:$A/run/ssl_scache(512000)"

# --- autotls: the whole configuration a site needs ---
AutoTLSCA $PEBBLE_DIRECTORY
AutoTLSCATrust "$PEBBLE_CA_TRUST"
AutoTLSContact admin@example.com
AutoTLSAcceptTerms on
AutoTLSStore "$A/store"
AutoTLSChallenges $CHALLENGE

<VirtualHost 127.0.0.1:$PEBBLE_HTTP_PORT>
    ServerName ${NAMES[0]}
    ServerAlias ${NAMES[1]}
    Redirect permanent / https://${NAMES[0]}/
</VirtualHost>
<VirtualHost 127.0.0.1:$PEBBLE_TLS_PORT>
    ServerName ${NAMES[0]}
    ServerAlias ${NAMES[1]}
    AutoTLS on
    <Location /autotls-status>
        SetHandler autotls-status
        Require local
    </Location>
</VirtualHost>
EOF
sed -n '/--- autotls/,$p' "$A/apache2.conf"
run apache2 -d "$A" -f "$A/apache2.conf" -t
run apache2 -d "$A" -f "$A/apache2.conf" -k start
APACHE_STARTED=1
sleep 0.5
pids_before=$(pgrep -d, -f "apache2 -d $A" || true)

step "3/5 the certificate arrives and is served, without a restart"
got=
for _ in $(seq 600); do
    if echo | openssl s_client -connect "127.0.0.1:$PEBBLE_TLS_PORT" -servername "${NAMES[0]}" \
            -verify_return_error -CAfile "$PEBBLE_ROOT" > "$WORK/s_client.txt" 2>&1; then
        got=1
        break
    fi
    sleep 0.1
done
[ -n "$got" ] || { tail -n 30 "$A/logs/error.log"; echo "no certificate within 60s" >&2; exit 1; }
grep -E "autotls" "$A/logs/error.log" | tail -n 5
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$WORK/s_client.txt" > "$WORK/leaf.pem"
run openssl x509 -in "$WORK/leaf.pem" -noout -subject -issuer -dates -ext subjectAltName
pids_after=$(pgrep -d, -f "apache2 -d $A" || true)
echo "apache processes before: $pids_before"
echo "apache processes after:  $pids_after"
[ "$pids_before" = "$pids_after" ] && echo "(the same: nothing was restarted or reloaded)"

step "4/5 HTTPS with the new certificate, verified against Pebble's root"
for name in "${NAMES[@]}"; do
    run curl -sS --cacert "$PEBBLE_ROOT" --resolve "$name:$PEBBLE_TLS_PORT:127.0.0.1" \
        "https://$name:$PEBBLE_TLS_PORT/"
done

step "5/5 the status page"
run curl -sS --cacert "$PEBBLE_ROOT" --resolve "${NAMES[0]}:$PEBBLE_TLS_PORT:127.0.0.1" \
    "https://${NAMES[0]}:$PEBBLE_TLS_PORT/autotls-status?format=json"
echo
run curl -sS --cacert "$PEBBLE_ROOT" --resolve "${NAMES[0]}:$PEBBLE_TLS_PORT:127.0.0.1" \
    "https://${NAMES[0]}:$PEBBLE_TLS_PORT/autotls-status?format=prometheus"
echo
echo "demo done: Apache serves a certificate for ${NAMES[*]} from a local ACME CA"
