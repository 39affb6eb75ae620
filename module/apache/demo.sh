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
# shellcheck source=scripts/demo-lib.sh
. "$SRC/scripts/demo-lib.sh"
demo_init apache module/apache/mod_autotls.so apache2-dev "$@"
MODULES=/usr/lib/apache2/modules
APACHE_STARTED=
cleanup() {
    if [ -n "$APACHE_STARTED" ]; then
        apache2 -d "$WORK/apache" -f "$WORK/apache/apache2.conf" -k stop 2>/dev/null || true
        for _ in $(seq 100); do [ -f "$WORK/apache/run/apache2.pid" ] || break; sleep 0.1; done
    fi
    demo_cleanup
}
trap cleanup EXIT

demo_start_ca "1/5"

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
demo_wait_cert "$A/logs/error.log"
pids_after=$(pgrep -d, -f "apache2 -d $A" || true)
echo "apache processes before: $pids_before"
echo "apache processes after:  $pids_after"
[ "$pids_before" = "$pids_after" ] && echo "(the same: nothing was restarted or reloaded)"

step "4/5 HTTPS with the new certificate, verified against Pebble's root"
demo_https

step "5/5 the status page"
demo_https "/autotls-status?format=json"
echo
demo_https "/autotls-status?format=prometheus"
echo
echo "demo done: Apache serves a certificate for ${NAMES[*]} from a local ACME CA"
