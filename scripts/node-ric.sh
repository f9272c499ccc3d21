#!/usr/bin/env bash
# The official Node.js runtime interface client (aws-lambda-ric, npm) for the Runtime API
# tests, installed once into .cache/ (ignored by git); tests/fixtures/node_ric.py runs the
# same install when this has not been run. Needs node, npm and the native-addon build
# tools (scripts/system-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -c 'from tests.fixtures.node_ric import ric_node_modules; print(ric_node_modules())'
