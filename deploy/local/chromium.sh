#!/usr/bin/env bash
# Installs Debian's Chromium at the pinned version for the browser test of the account page
# (aggregate/worker: TestAccountPageInABrowser). apt keeps the packages in its own cache; nothing
# lands in the checkout. Needs root (CI runs as root); otherwise it says what to run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
want=$CHROMIUM_DEBIAN_VERSION
have=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null || true)
if [[ "$have" == "$want" ]]; then
  exit 0
fi
pkgs=(chromium="$want" chromium-common="$want")
if [[ $(id -u) -ne 0 ]]; then
  echo "browser: Chromium $want is not installed (found: ${have:-none}); run as root: apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
  exit 1
fi
echo "browser: installing Debian's chromium $want (about 100 MB, once)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
fi
chromium --version
