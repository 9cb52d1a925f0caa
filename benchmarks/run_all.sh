#!/usr/bin/env bash
# One command for a machine with an accelerator: the test suite, then every
# benchmark script, each writing its tables (and figures) into one folder,
# docs/_results/gpu/ by default, next to the CPU tables in docs/_results/.
#
#   bash benchmarks/run_all.sh              # tests + benchmarks, <= 8 minutes
#   bash benchmarks/run_all.sh OUT_DIR      # write the tables elsewhere
#   RUN_ALL_ALLOW_CPU=1 bash benchmarks/run_all.sh /tmp/check   # dry run on a CPU
#
# Needs `pip install -e ".[test,bench]"` with an accelerator build of jaxlib.
# Every benchmark script takes `--out-dir DIR`: it writes its results file
# (`bench_<name>.md`) and its figures (`bench_<name>_*.png`) into DIR instead of
# docs/_results/. Each step runs under its own time limit (the limits add up to
# 8 minutes); a step that fails or runs out of time is marked in
# OUT_DIR/run_all.md and the next one still runs. The exit status is 1 if any
# step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/_results/gpu}"
export OMP_WAIT_POLICY=PASSIVE
# Several test processes share the accelerator: no process grabs most of its
# memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

backend="$(python -c 'import jax; print(jax.default_backend())')" || exit 2
if [ "$backend" = cpu ] && [ -z "${RUN_ALL_ALLOW_CPU:-}" ]; then
  echo "run_all.sh: JAX sees no accelerator (backend cpu); install an" \
    "accelerator build of jaxlib, or set RUN_ALL_ALLOW_CPU=1." >&2
  exit 2
fi
mkdir -p "$out"
device="$(python -c 'import jax; d = jax.devices()[0]; print(len(jax.devices()), "x", d.device_kind)')"
summary="$out/run_all.md"
{
  echo "# Accelerator run"
  echo
  echo "\`bash benchmarks/run_all.sh $out\` on $device, $(date -u +%Y-%m-%d)."
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} > "$summary"

failed=0
step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2" start=$SECONDS status
  shift 2
  echo "== $name (at most $limit s): $*"
  if timeout --kill-after=10 "$limit" "$@"; then
    status=ok
  else
    local code=$?
    failed=1
    if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
      status="out of time"
    else
      status="failed ($code)"
    fi
  fi
  echo "| $name | $status | $((SECONDS - start)) |" >> "$summary"
}

step "tests" 180 python -m pytest -q -n 4 -p no:cacheprovider
step "bench_ctc.py" 90 python benchmarks/bench_ctc.py --out-dir "$out"
step "bench_rnn.py" 60 python benchmarks/bench_rnn.py --out-dir "$out"
step "bench_decode.py" 90 python benchmarks/bench_decode.py --quick --out-dir "$out"
step "bench_align.py" 60 python benchmarks/bench_align.py --out-dir "$out"

echo
cat "$summary"
exit "$failed"
