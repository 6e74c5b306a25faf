#!/usr/bin/env bash
# The main job on the embedded default: set everything up, then start the live server on 127.0.0.1 with the
# demo source and the CPU generator (`lite`), and print the URL to open. The offline demo is `livedub demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/livedub" serve --demo --host 127.0.0.1 --generator lite --size 512x512 "$@"
