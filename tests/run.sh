#!/usr/bin/env bash
# The README's test command. Installs the project with its test extras (torch is the CPU wheel, the numerical
# reference only), then runs ruff and the whole test suite on two pytest-xdist workers (ZOOMIQA_TEST_WORKERS
# changes the number; 0 runs in this process). Pass pytest flags through, e.g. -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
python -m ruff check .
python -m pytest -q --durations=20 -n "${ZOOMIQA_TEST_WORKERS:-2}" --dist load "$@"
