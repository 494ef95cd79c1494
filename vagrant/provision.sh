#!/usr/bin/env bash
# Provision farm's development box (or any Debian 12 machine): run the
# repository's scripts/setup as root -- the same install script the README's
# `scripts/run` and `scripts/test` use -- then build the guest image.
# Idempotent: a second run installs nothing and rebuilds nothing.
#
#   vagrant/provision.sh [REPO]      (REPO defaults to this script's checkout)
set -euo pipefail
repo=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
if [ "$(id -u)" != 0 ]; then
  echo "provision: must run as root (vagrant runs it privileged; else use sudo)" >&2
  exit 1
fi
if [ ! -x "$repo/scripts/setup" ]; then
  echo "provision: $repo/scripts/setup not found (pass the farm checkout as argument)" >&2
  exit 1
fi
cd "$repo"
echo "provision: scripts/setup in $repo"
scripts/setup
echo "provision: guest image"
.venv/bin/farm image build | .venv/bin/python -c '
import json, sys
info = json.load(sys.stdin)
print("provision: image kernel_rebuilt=%s initrd_rebuilt=%s" % (
    info["kernel_rebuilt"], info["initrd_rebuilt"]))'
echo "provision: done; try: cd $repo && scripts/run"
