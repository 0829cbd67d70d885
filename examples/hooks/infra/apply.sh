#!/bin/sh
# ringfence command executor, deploy hook for an infrastructure change released like code.
#
# The release's artifact names the change; its config carries the settings the change applies
# (keys starting with INFRA_). This stand-in "infrastructure" is a settings file per slot that
# the service runs with: applying the change writes the file, then creates the service on it
# (as ../local/deploy.sh does), so a bad change shows in the service's health and is undone
# like a bad release. A real hook would run `tofu apply` of the release's saved plan, or
# `kubectl apply -f` its manifests, here (docs/executors.md, "Infrastructure changes").
set -eu

state="${HOOK_STATE_DIR:?set HOOK_STATE_DIR in [executor] env}"
slot="$state/$RINGFENCE_WORKLOAD.$RINGFENCE_VERSION.$RINGFENCE_REPLICA"
mkdir -p "$state"

# The change itself: the settings this version of the infrastructure defines.
env | grep '^INFRA_' | sed 's/^INFRA_//' | sort >"$slot.settings"
echo "applied $(wc -l <"$slot.settings") setting(s) of infrastructure $RINGFENCE_VERSION to $slot.settings"

# The service on that infrastructure, with the settings as its environment.
set -a
. "$slot.settings"
set +a
exec "$(dirname "$0")/../local/deploy.sh"
