#!/bin/sh
# autotls dns-01 hook: "setup|teardown RECORD VALUE". Adds or removes the TXT
# record with nsupdate (RFC 2136) against your primary DNS server, using a
# TSIG key. Adapt SERVER and KEYFILE; any DNS provider's CLI works the same.
set -eu
SERVER=ns1.example.com
KEYFILE=/etc/nginx/autotls-tsig.key
action=$1 record=$2 value=$3
case "$action" in
  setup)    cmd="update add $record. 60 TXT \"$value\"" ;;
  teardown) cmd="update delete $record. TXT \"$value\"" ;;
  *) echo "usage: $0 setup|teardown RECORD VALUE" >&2; exit 2 ;;
esac
printf 'server %s\n%s\nsend\n' "$SERVER" "$cmd" | nsupdate -k "$KEYFILE"
# Give secondaries a moment before the CA looks.
[ "$action" = setup ] && sleep 30
exit 0
