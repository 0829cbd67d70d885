#!/bin/sh
# ringfence command executor, status hook: exit 0 while the instance runs, 1 once it is gone.
set -eu

pid="${RINGFENCE_INSTANCE#local-}"
if kill -0 "$pid" 2>/dev/null; then
    exit 0
fi
echo "process $pid is gone"
exit 1
