#!/usr/bin/env bash
# Installs the Debian packages the test suite drives (git, sqlite3, chattr, mount, ...), listed in
# scripts/test-deps.txt, when any is missing. Runs before `npm test`, so that `npm ci && npm test`
# is all a fresh machine needs. FUSE itself needs nothing from Debian as root (see README).
set -euo pipefail
list=$(dirname "$0")/test-deps.txt
missing=()
while read -r pkg; do
  [[ -z $pkg || $pkg == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2> /dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done < "$list"
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "darefs tests need these Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing test dependencies: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null 2>&1 ||
  { apt-get update -qq > /dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null; }
