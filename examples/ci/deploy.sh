#!/usr/bin/env bash
# Deploys one version of a workload through ringfence, from a CI pipeline, and fails the step
# unless the rollout completed. The GitHub Actions workflow (github-actions.yml) and the Azure
# Pipelines YAML (azure-pipelines.yml) beside this file both run it, and so does the test that
# checks them (crates/ringfence/tests/it/pipelines.rs). docs/pipelines.md explains it all.
#
# Inputs (environment variables):
#   RINGFENCE_SERVER  the server's URL, e.g. https://deploy.example.com:7443
#   RINGFENCE_TOKEN   the pipeline's token, with the deployer role on WORKLOAD (a secret);
#                     or RINGFENCE_TOKEN_FILE, a file holding it
#   WORKLOAD          the workload to deploy, e.g. checkout
#   VERSION           the version to deploy: the pipeline's parameter
#   ARTIFACT          what the release runs, e.g. registry.example.com/checkout:1.4.2
#   SPEC              optional: a spec file to validate and apply first
#   CONFIG            optional: the release's configuration, one KEY=VALUE per line
#   REASON            optional: why, stored with the rollout (`ringfence events` shows it)
#   TIMEOUT           optional: how long to wait for the rollout (default 30m)
#   COMMIT, AUTHOR    optional: release metadata: the commit the artifact was built from, its author
#   COMMITTED_AT      optional: when COMMIT was made, RFC 3339 (`git log -1 --format=%cI`); DORA's
#                     lead time for changes runs from it
#
# A release is immutable: VERSION registered again with the same ARTIFACT, CONFIG, COMMIT and
# AUTHOR changes nothing (so a re-run works), with anything else it is refused (exit 5).
#
# Exit code: ringfence's (docs/cli.md). 0 the rollout completed (or VERSION already is the
# stable version); 10 it ended without completing (fell back, rolled back or aborted); 11 it
# was still going at TIMEOUT (it goes on on the server); 7 the token was refused; 2 an input is
# missing; anything else: the ringfence command named on stderr failed.
set -euo pipefail

# The step's own stdout, where the CI system reads its commands, even while a command's output
# goes to a file.
exec 3>&1

say() { printf '==> %s\n' "$*" >&3; }

# An error the CI system shows on the run's summary page too.
error() {
    if [ "${GITHUB_ACTIONS:-}" = true ]; then
        printf '::error title=ringfence::%s\n' "$*" >&3
    elif [ -n "${TF_BUILD:-}" ]; then
        printf '##vso[task.logissue type=error]%s\n' "$*" >&3
    fi
    printf 'deploy.sh: %s\n' "$*" >&2
}

die() {
    local code=$1
    shift
    error "$*"
    exit "$code"
}

# What ringfence's exit codes mean (docs/cli.md).
meaning() {
    case $1 in
        1) echo "failed (IO or server error)" ;;
        2) echo "bad command line" ;;
        3) echo "input refused: invalid spec, release or request" ;;
        4) echo "workload, release or rollout not found" ;;
        5) echo "conflict with the current state (a rollout in progress, the version exists with other content, the release is held or revoked)" ;;
        6) echo "the server cannot be reached" ;;
        7) echo "refused: the token is not valid, or its roles do not allow this on $WORKLOAD" ;;
        10) echo "the rollout ended without completing" ;;
        11) echo "waiting for the rollout timed out" ;;
        127) echo "command not found" ;;
        *) echo "failed" ;;
    esac
}

# Runs a ringfence command; on failure says which one and why, and exits with its code.
rf() {
    local code=0
    ringfence "$@" || code=$?
    if [ "$code" -ne 0 ]; then
        # Named by its words up to the first option: values stay out of the log.
        local words=() skip=no a
        for a in "$@"; do
            if [ "$skip" = yes ]; then
                skip=no
                continue
            fi
            case $a in
                -o) skip=yes ;;
                -*) break ;;
                *) words+=("$a") ;;
            esac
        done
        die "$code" "\`ringfence ${words[*]}\` exited $code: $(meaning "$code")"
    fi
}

# json FILE PATH: the value at PATH (`.a.b`) of a JSON document, empty when absent or null.
# jq where it is installed (GitHub's and Azure's hosted runners have it), else python3.
json() {
    if command -v jq >/dev/null 2>&1; then
        jq -r "$2 | select(. != null)" "$1"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
for key in sys.argv[2].lstrip(".").split("."):
    v = v.get(key) if isinstance(v, dict) else None
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (dict, list)):
    print(json.dumps(v))
elif v is not None:
    print(v)
' "$1" "$2"
    else
        die 1 "reading ringfence's JSON output needs jq or python3"
    fi
}

# Outputs for later steps: GitHub's step outputs, Azure's output variables.
output() {
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
        printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"
    fi
    if [ -n "${TF_BUILD:-}" ]; then
        printf '##vso[task.setvariable variable=%s;isOutput=true]%s\n' "$1" "$2" >&3
    fi
}

# --- Inputs -------------------------------------------------------------------------------
for name in RINGFENCE_SERVER WORKLOAD VERSION ARTIFACT; do
    [ -n "${!name:-}" ] || die 2 "$name is not set (see the top of $0)"
done
if [ -z "${RINGFENCE_TOKEN:-}" ] && [ -z "${RINGFENCE_TOKEN_FILE:-}" ]; then
    # Never fall back to a token lying around on the agent: the pipeline acts as its own.
    die 2 "RINGFENCE_TOKEN is empty: map the pipeline's secret to it (docs/pipelines.md)"
fi
# Azure leaves `$(NAME)` as it is when no variable NAME exists.
# shellcheck disable=SC2016
case ${RINGFENCE_TOKEN:-} in
    '$('*) die 2 "RINGFENCE_TOKEN is the unexpanded ${RINGFENCE_TOKEN}: the secret variable is not defined (variable group not linked?)" ;;
esac
REASON=${REASON:-}
TIMEOUT=${TIMEOUT:-30m}
COMMIT=${COMMIT:-}
AUTHOR=${AUTHOR:-}
export RINGFENCE_SERVER

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

command -v ringfence >/dev/null 2>&1 || die 127 "ringfence is not on PATH (install it first: docs/pipelines.md)"
say "$(ringfence --version) -> $RINGFENCE_SERVER: $WORKLOAD $VERSION"

# --- The spec, when the pipeline carries it ------------------------------------------------
if [ -n "${SPEC:-}" ]; then
    say "validate and apply $SPEC"
    rf validate "$SPEC"
    # A deployer may change phases, bakes and health; what the workload executes is the admin's.
    rf apply "$SPEC"
fi

# --- Register the release (the same version with the same content again changes nothing) ---
release=(release create "$WORKLOAD" --version "$VERSION" --artifact "$ARTIFACT")
[ -z "$COMMIT" ] || release+=(--commit "$COMMIT")
[ -z "$AUTHOR" ] || release+=(--author "$AUTHOR")
[ -z "${COMMITTED_AT:-}" ] || release+=(--committed-at "$COMMITTED_AT")
while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}
    case $line in
        '' | '#'*) continue ;;
        *=*) release+=(--config "$line") ;;
        *) die 2 "CONFIG line \"$line\" is not KEY=VALUE" ;;
    esac
done <<<"${CONFIG:-}"
say "register $WORKLOAD $VERSION ($ARTIFACT)"
rf -o json "${release[@]}" >"$tmp/release.json"
if [ "$(json "$tmp/release.json" .created)" = true ]; then
    say "release $VERSION registered: $(json "$tmp/release.json" .release.digest)"
else
    say "release $VERSION was already registered with the same content: $(json "$tmp/release.json" .release.digest)"
fi

# --- Nothing to do when it already is the stable version (a re-run of a pipeline that passed)
rf -o json status "$WORKLOAD" >"$tmp/before.json"
stable=$(json "$tmp/before.json" .stable)
case $(json "$tmp/before.json" .rollout.status) in
    progressing | paused | halted | mitigating) active=yes ;;
    *) active=no ;;
esac
if [ "$stable" = "$VERSION" ] && [ "$active" = no ]; then
    say "$VERSION already is the stable version of $WORKLOAD: nothing to deploy"
    output rollout_status completed
    exit 0
fi

# --- Deploy and wait --------------------------------------------------------------------------
say "deploy $WORKLOAD $VERSION (waiting up to $TIMEOUT)"
code=0
ringfence -o text deploy "$WORKLOAD" "$VERSION" --wait --timeout "$TIMEOUT" --reason "$REASON" || code=$?

case $code in
    0 | 10 | 11)
        # The rollout the deploy started is the workload's latest.
        rf -o json status "$WORKLOAD" >"$tmp/after.json"
        id=$(json "$tmp/after.json" .rollout.id)
        status=$(json "$tmp/after.json" .rollout.status)
        output rollout_id "$id"
        output rollout_status "$status"
        ;;
esac
case $code in
    0)
        say "rollout $id completed: $VERSION is the stable version of $WORKLOAD"
        ;;
    10)
        error "rollout $id of $WORKLOAD $VERSION ended $status: traffic is back on the stable version"
        ringfence why "$WORKLOAD" || true
        ;;
    11)
        error "rollout $id of $WORKLOAD $VERSION is still $status after $TIMEOUT; it goes on on the server: \`ringfence status $WORKLOAD\`, \`ringfence abort $WORKLOAD\`"
        ;;
    *)
        error "\`ringfence deploy $WORKLOAD $VERSION\` exited $code: $(meaning "$code")"
        ;;
esac
exit "$code"
