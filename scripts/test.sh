#!/usr/bin/env bash
# The whole test suite: type-check, lint, unit and fake-TUN tests, then the
# root end-to-end tests in network namespaces. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
dp_need_root "test.sh (the unprivileged tiers alone: npm run test:unit)"
dp_install_missing --cross
dp_build
status=0
npm test || status=$?
# Files the root run wrote (dist/) go back to the user who called sudo.
if [ -n "${SUDO_UID:-}" ]; then chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" dist build prebuilds .cache 2>/dev/null || true; fi
exit $status
