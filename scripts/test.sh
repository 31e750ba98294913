#!/usr/bin/env bash
# README command 2: set up .venv with the test extras and run the whole suite headless.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CULTURESEG_FORCE_XVFB=1
bash scripts/setup.sh testing
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
