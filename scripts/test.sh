#!/usr/bin/env bash
# Runs every Apiary test. Installs the system tools the tests use where they are missing
# (scripts/test-deps.sh), starts the local S3 server and the Azure Blob emulator the storage
# tests need (installing them on first use), installs playwright-core for the console's
# browser test (scripts/ui-test-deps.sh), runs the workspace tests, then builds the Python binding into a cached virtual
# environment and runs its pytest suite, and builds the API docs (rustdoc warnings are
# errors). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/test-deps.sh
# (Assigned first: a server that fails to start stops the run, which `eval "$(…)"` would not.)
s3_env="$(scripts/s3-server.sh)"
eval "$s3_env"
azure_env="$(scripts/azure-server.sh)"
eval "$azure_env"
ui_env="$(scripts/ui-test-deps.sh)"
eval "$ui_env"
export APIARY_LIN_CASES_MEMORY="${APIARY_LIN_CASES_MEMORY:-8000}"
export APIARY_LIN_CASES_LOCAL="${APIARY_LIN_CASES_LOCAL:-2000}"
export APIARY_LIN_CASES_S3="${APIARY_LIN_CASES_S3:-40}"
cargo test --workspace "$@"
scripts/python-tests.sh
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked
