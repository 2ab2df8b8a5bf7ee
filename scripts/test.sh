#!/usr/bin/env bash
# The test command of vqrae-rs, on a fresh machine: installs what the tests need (the data sets
# and the converted DINOv2-small), then runs every test of the workspace and every command the
# README shows. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 scripts/check_layout.py    # the layout limits of docs/ARCHITECTURE.md, in a second
python3 scripts/check_results.py --strict   # cited result files exist, recorded models still match their sha256
python3 scripts/perf/llamacpp_reference.py self-test   # llama-batched-bench output parsing (no llama.cpp needed)
scripts/setup-data.sh
scripts/setup-models.sh
scripts/install-browser.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
scripts/readme-commands.sh         # every command the README shows, as written
