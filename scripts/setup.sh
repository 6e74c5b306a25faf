#!/usr/bin/env bash
# Idempotent setup for a fresh machine: Debian packages, a virtual environment in .venv, the Python packages.
# Sourced or run by scripts/run.sh and scripts/test.sh; safe to run again (a stamp skips finished steps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIVEDUB_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

# Debian packages used at run or test time: espeak-ng (synthetic speech for tests), codec2-examples (real speech
# for the demo), mosquitto (MQTT tests), chromium + chromium-driver (browser tests), openssl (MQTT TLS test),
# nginx + its RTMP module (RTMP/HLS output tests), srt-tools (srt-live-transmit: SRT out and in; PyAV's
# bundled FFmpeg has no SRT protocol).
APT_PACKAGES="espeak-ng codec2-examples mosquitto mosquitto-clients chromium chromium-driver openssl
  nginx libnginx-mod-rtmp srt-tools"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  # apt and debconf print notes on stderr (e.g. "delaying package configuration") although nothing
  # failed: keep them in a log, shown only when the install fails.
  apt_log="$(mktemp)"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
         --no-install-recommends $missing; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2; rm -f "$apt_log"; echo "setup: installing Debian packages failed" >&2; exit 1
  fi
  rm -f "$apt_log"
  # Debian starts nginx as a service on install where it can; the tests start their own on loopback.
  if command -v service >/dev/null 2>&1; then $SUDO service nginx stop >/dev/null 2>&1 || true; fi
fi

stamp_input="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
STAMP="$VENV/.livedub-setup-$stamp_input"
if [ -f "$STAMP" ]; then exit 0; fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# -qq: only errors. A machine whose pip configuration names find-links folders that do not exist would
# otherwise print a WARNING per package, although nothing failed.
PIP="$VENV/bin/python -m pip"
$PIP install -qq --upgrade pip
# The local CPU build of torch first: any other torch requirement would pull GBs of CUDA wheels.
# On a GPU machine, install the CUDA torch you want before running this script; it is then kept.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  $PIP install -qq "torch==2.13.0"
fi
$PIP install -qq -e "$ROOT[test]"
# mediapipe 0.10.21 is the last release that bundles its face-mesh model (Apache-2.0). Its declared
# dependencies pin numpy<2 and pull jax; installed without them plus what it really imports, it runs on numpy 2.
# What it imports first, mediapipe last: pip checks the installed set after each install, and would report
# mediapipe's declared (unwanted) dependencies as an ERROR although nothing failed.
$PIP install -qq absl-py attrs flatbuffers "protobuf>=4.25.3,<5" matplotlib
$PIP install -qq --no-deps "mediapipe==0.10.21"
touch "$STAMP"
echo "setup: done ($VENV)"
