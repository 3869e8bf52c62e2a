#!/usr/bin/env bash
# npm pack / npm publish (prepack): makes sure what the tarball needs can be built,
# then builds the prebuilt addons (scripts/prebuild.sh). npm runs `prepare`
# (tsc: dist/) right after this.
# From a fresh clone there is no node_modules and so no TypeScript: the
# devDependencies are installed first (npm ci --ignore-scripts: no addon build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/tsc ]; then
  echo "dp-tcp prepack: TypeScript (a devDependency) is not installed: npm ci --ignore-scripts" >&2
  if ! npm ci --ignore-scripts --no-audit --no-fund >&2; then
    echo "dp-tcp prepack: error: installing the devDependencies failed; run 'npm ci', then pack again" >&2
    exit 1
  fi
fi
# A release (npm pack, npm publish) ships every architecture or fails; npm
# installing dp-tcp from git also packs, and there a missing cross compiler only
# leaves that architecture out.
case "${npm_command:-pack}" in
  pack | publish) ;;
  *) export DPTCP_PREBUILD_ALLOW_MISSING=${DPTCP_PREBUILD_ALLOW_MISSING:-1} ;;
esac
bash scripts/prebuild.sh >&2
