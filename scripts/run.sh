#!/usr/bin/env bash
# The main job on the embedded default: set everything up, then run livedub's demo with the CPU generator.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/livedub" demo "$@"
