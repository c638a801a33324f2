#!/usr/bin/env bash
# Runs every fuzz target of wsgate-core for the given number of seconds each (default 60), one
# after the other, on one core. Usage: core/fuzz/run.sh [seconds] [target...]
#
# The working corpus of each target grows in corpus/<target>/ (ignored by git); the committed
# seeds in seeds/<target>/ are read as a second corpus directory. Crashes land in
# artifacts/<target>/; the full libFuzzer output of each run in artifacts/logs/<target>.log.
# Extra libFuzzer flags can be given in FUZZ_FLAGS, cargo fuzz flags in CARGO_FUZZ_FLAGS
# (e.g. CARGO_FUZZ_FLAGS="--sanitizer none": no AddressSanitizer, about five times faster).
#
# cargo fuzz needs nightly compiler flags (-Z sanitizer=..., -C passes=sancov-module); on a
# stable toolchain RUSTC_BOOTSTRAP=1 allows them. Install once: cargo install cargo-fuzz --locked
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(handshake frame utf8 message framing)
fi

export RUSTC_BOOTSTRAP=1
# shellcheck disable=SC2086
cargo fuzz build ${CARGO_FUZZ_FLAGS:-}

mkdir -p artifacts/logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${seconds}s"
    # shellcheck disable=SC2086
    if cargo fuzz run ${CARGO_FUZZ_FLAGS:-} "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -jobs=1 -workers=1 -print_final_stats=1 ${FUZZ_FLAGS:-} \
        >"artifacts/logs/$t.log" 2>&1; then
        { grep -E '^#[0-9]+[[:space:]]+DONE' "artifacts/logs/$t.log" || true; } | tail -n 1
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
            "artifacts/logs/$t.log" || true
    else
        failed+=("$t")
        echo "!! $t failed; see artifacts/logs/$t.log and artifacts/$t/"
        grep -E 'panicked at|^SUMMARY|Test unit written' "artifacts/logs/$t.log" || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all targets ran ${seconds}s without a finding"
