#!/bin/sh
# ringfence command executor, deploy hook: runs one replica of a release as a local process.
#
# A runnable example of the hook protocol (docs/executors.md): make the slot's instance run,
# then print where it serves (`endpoint=HOST:PORT`) and its id (`instance=ID`). It must be
# idempotent: a slot that already runs answers with that instance (`adopted=true`).
#
# Environment from ringfence: RINGFENCE_WORKLOAD, RINGFENCE_VERSION, RINGFENCE_REPLICA,
# RINGFENCE_BIN, PORT (a free loopback port), the release's config, and [executor] env; this
# example also needs HOOK_STATE_DIR (where it keeps its pid files) in [executor] env.
set -eu

state="${HOOK_STATE_DIR:?set HOOK_STATE_DIR in [executor] env}"
slot="$state/$RINGFENCE_WORKLOAD.$RINGFENCE_VERSION.$RINGFENCE_REPLICA"
mkdir -p "$state"

if [ -f "$slot.pid" ] && kill -0 "$(cat "$slot.pid")" 2>/dev/null; then
    echo "endpoint=$(cat "$slot.endpoint")"
    echo "instance=local-$(cat "$slot.pid")"
    echo "adopted=true"
    exit 0
fi

# The instance's output goes to its own log, not to the hook's: the hook ends, the instance stays.
"$RINGFENCE_BIN" sample-app --listen "127.0.0.1:$PORT" --version "$RINGFENCE_VERSION" \
    >"$slot.log" 2>&1 </dev/null &
echo "$!" >"$slot.pid"
echo "127.0.0.1:$PORT" >"$slot.endpoint"
echo "started $RINGFENCE_WORKLOAD $RINGFENCE_VERSION replica $RINGFENCE_REPLICA as pid $!"
echo "endpoint=127.0.0.1:$PORT"
echo "instance=local-$!"
