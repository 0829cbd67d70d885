#!/bin/sh
# ringfence command executor, stop hook: stops the instance deploy.sh started.
# RINGFENCE_INSTANCE is the id deploy.sh printed (`local-<pid>`). An instance that is already
# gone is stopped: exit 0.
set -eu

pid="${RINGFENCE_INSTANCE#local-}"
state="${HOOK_STATE_DIR:?set HOOK_STATE_DIR in [executor] env}"
slot="$state/$RINGFENCE_WORKLOAD.$RINGFENCE_VERSION.$RINGFENCE_REPLICA"

if kill -TERM "$pid" 2>/dev/null; then
    # SIGTERM, then SIGKILL after 5 s.
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
fi
if [ -f "$slot.pid" ] && [ "$(cat "$slot.pid")" = "$pid" ]; then
    rm -f "$slot.pid" "$slot.endpoint"
fi
echo "stopped pid $pid"
