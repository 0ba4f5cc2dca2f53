#!/bin/bash
# Where a cold start's first AWS call spends its time (bench/results.md, "First AWS call: breakdown").
# Stands in for the function in the cold-start bench and runs the release binary with the SDK's,
# hyper's and the handler's debug logs, each line stamped with the wall clock as it arrives:
#
#   .tools/bench/bin/python bench/run.py --skip-core --skip-size --skip-burst --skip-outage \
#       --runs 3 --rust-bin bench/trace-wrapper.sh
#   # one file per process: bench/out/trace-<ns>.log, times in ms from the exec of the binary
#   # (run.py deletes bench/out/*.log when it starts: copy them before the next run)
#
# The stamper (python) is started, and given half a second, before the binary is exec'd, so that
# it reads the lines as they come; spawn → ready in the table is therefore not the function's own
# (the half second counts), and the debug logging slows everything a little. Only the gaps between
# the lines of one process are meant to be read. ECS_RERUN_TRACE_BIN: another binary;
# ECS_RERUN_TRACE_LOG: another RUST_LOG filter.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bench/out/trace-$(date +%s%N).log"
export RUST_LOG="${ECS_RERUN_TRACE_LOG:-warn,aws_smithy_runtime=debug,aws_smithy_http_client=debug,hyper_util=debug,ecs_rerun=debug}"
exec 3> >(python3 -u -c '
import sys, time
t0 = None
for line in iter(sys.stdin.readline, ""):
    now = time.time()
    if line.startswith("EXEC "):
        t0 = float(line.split()[1])
        continue
    sys.stdout.write(f"{(now - t0) * 1000:8.1f} {line}")
' > "$out")
sleep 0.5
echo "EXEC $(date +%s.%N)" >&3
exec "${ECS_RERUN_TRACE_BIN:-$root/target/release/ecs-rerun}" >&3
