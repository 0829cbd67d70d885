#!/bin/sh
# ringfence command executor, stop hook for an infrastructure change: the undo of apply.sh.
# Stops the service created on this version's infrastructure (as ../local/stop.sh does), then
# removes what the change wrote, so a fallen-back change leaves nothing of itself behind.
set -eu

state="${HOOK_STATE_DIR:?set HOOK_STATE_DIR in [executor] env}"
slot="$state/$RINGFENCE_WORKLOAD.$RINGFENCE_VERSION.$RINGFENCE_REPLICA"

"$(dirname "$0")/../local/stop.sh"
rm -f "$slot.settings"
echo "infrastructure $RINGFENCE_VERSION of slot $RINGFENCE_REPLICA destroyed"
