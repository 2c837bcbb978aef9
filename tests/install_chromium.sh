#!/bin/sh
# Browser tests drive Debian's Chromium: Playwright's own browser download cannot be fetched
# here, its Python package can. `make test` calls this; it installs Chromium when it is missing
# and this machine lets us (root with apt-get). It never fails the run itself: without Chromium
# the browser tests skip, saying why, or fail when CI is set.
set -u
CHROMIUM=/usr/bin/chromium

[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: $CHROMIUM is missing and installing it needs root and apt-get" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "install_chromium: installing Debian's chromium for the browser tests" >&2
# The package lists may be missing or stale on a fresh machine: refresh them only if needed.
apt-get install -y -q chromium >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
    || echo "install_chromium: apt-get could not install chromium" >&2
exit 0
