#!/usr/bin/env bash
# README command 1: set up .venv with napari and open it with the Segment widget
# docked on a sample image and the default model. Options go to `cultureseg demo`,
# e.g. `--screenshot demo.png` (segment, save a screenshot of the window, exit) or
# `--sample synthetic`. Without a display it runs on Xvfb.
set -euo pipefail
export CULTURESEG_CWD="$PWD"   # --screenshot and --sample paths are relative to where you are
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
if [ -n "${DISPLAY:-}" ]; then
  exec .venv/bin/cultureseg demo "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/cultureseg demo "$@"
