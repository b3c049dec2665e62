#!/usr/bin/env bash
# Runs every test of the workspace (unit, node, description, lint) in one pytest session, so the
# closing line counts them all and the exit code is non-zero on any failure.
# Expects the environment of env.sh. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest "$@"
