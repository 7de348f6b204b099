#!/usr/bin/env bash
# Set up everything the tests need, then run the default test suite (CI runs this).
# Pass pytest arguments through, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
