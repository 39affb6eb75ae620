#!/usr/bin/python3
"""dns-01 hook for the tests: publish TXT records in pebble-challtestsrv.

autotls runs its dns-01 command as

    COMMAND setup    _acme-challenge.example.com VALUE
    COMMAND teardown _acme-challenge.example.com VALUE

This script does that through challtestsrv's management interface, whose URL
comes from --management (or $AUTOTLS_CHALLTESTSRV). With --log, each call is
appended to that file as one line "ACTION NAME VALUE" so tests can check
which calls were made.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def post(management, path, body):
    req = urllib.request.Request(management.rstrip("/") + path,
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description="dns-01 hook over pebble-challtestsrv")
    parser.add_argument("--management", default=os.environ.get("AUTOTLS_CHALLTESTSRV"),
                        help="challtestsrv management URL")
    parser.add_argument("--log", help="append each call to this file")
    parser.add_argument("action", choices=["setup", "teardown"])
    parser.add_argument("name", help="the TXT record's name, _acme-challenge.<domain>")
    parser.add_argument("value", help="the TXT record's value")
    args = parser.parse_args(argv)
    if not args.management:
        parser.error("no management URL: use --management or set AUTOTLS_CHALLTESTSRV")

    host = args.name if args.name.endswith(".") else args.name + "."
    try:
        if args.action == "setup":
            post(args.management, "/set-txt", {"host": host, "value": args.value})
        else:
            post(args.management, "/clear-txt", {"host": host})
    except (OSError, urllib.error.URLError) as e:
        print(f"dns01 hook: {args.action} {args.name} failed: {e}", file=sys.stderr)
        return 1
    if args.log:
        with open(args.log, "a") as f:
            f.write(f"{args.action} {args.name} {args.value}\n")
    print(f"dns01 hook: {args.action} {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
