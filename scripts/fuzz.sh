#!/usr/bin/env bash
# make fuzz: run every property test (the files that use Hypothesis) round after round, each
# round with a fresh random seed and EVENTRUN_FUZZ_SCALE times the examples, for MINUTES.
# The first failure stops it: pin the falsifying example Hypothesis prints as an explicit
# @example (or a table row) next to the test, so CI's derandomized run keeps checking it.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
scale=${2:-10}
end=$(($(date +%s) + minutes * 60))
mapfile -t files < <(grep -rlE '^from hypothesis import' tests --include='test_*.py' | sort)
round=0
while (($(date +%s) < end)); do
    round=$((round + 1))
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    echo "== fuzz round $round (seed $seed, ${scale}x examples, until $(date -d "@$end" +%T))"
    if ! HYPOTHESIS_PROFILE=fuzz EVENTRUN_FUZZ_SCALE="$scale" .venv/bin/python -m pytest \
        -q -x -p no:cacheprovider --hypothesis-seed="$seed" "${files[@]}"; then
        echo "fuzz: round $round failed (seed $seed); add the example above as an @example" >&2
        exit 1
    fi
done
echo "fuzz: $round rounds, no failure"
