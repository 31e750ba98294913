#!/usr/bin/env bash
# Shared by demo.sh and test.sh: make .venv with the given extra, and Xvfb + Mesa
# for a headless display on Debian/Ubuntu when none is there.
set -euo pipefail
extra="$1"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extra]"

need_display_packages() {
  [ -z "${DISPLAY:-}" ] || [ -n "${CULTURESEG_FORCE_XVFB:-}" ]
}
XVFB_PACKAGES="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1"
if need_display_packages && command -v dpkg >/dev/null; then
  # shellcheck disable=SC2086
  if ! dpkg -s $XVFB_PACKAGES >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $XVFB_PACKAGES >/dev/null
  fi
fi
