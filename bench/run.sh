#!/usr/bin/env bash
# Builds the release binaries and runs one benchmark of design.md section 5.
#
#   bench/run.sh                      # the mitigation benchmark with its defaults
#   bench/run.sh mitigation --runs 5  # any ringfence-bench subcommand and flags
#   bench/run.sh flags --save         # flag evaluation vs unleash-yggdrasil, and OFREP over HTTP,
#                                     # saved to bench/results/flags.txt
#   bench/run.sh router --save        # router overhead next to nginx (installs nginx-light and wrk
#                                     # from Debian's packages when they are missing)
#   bench/run.sh mitigation --save --baseline /tmp/before/release/ringfence
#                                     # mitigation and router take --baseline BINARY: an earlier
#                                     # build measured in the same run, alternated with this one,
#                                     # side by side with after/before of the medians
#   bench/run.sh mitigations --save   # each mitigation's time to restored health, side by side
#   bench/run.sh failover --save      # three replicas on a PostgreSQL the bench starts, the leader
#                                     # SIGKILLed 20 times: failover times (needs postgresql)
#   bench/run.sh store --save         # appends per second on SQLite and PostgreSQL, and the events a
#                                     # real rollout appends: how far one log carries (needs postgresql)
#   bench/run.sh ui --save            # the hub's pages with 10,000 past rollouts in the log: time
#                                     # and bytes of the overview, workload and rollout pages
#   bench/run.sh tick --save          # a controller tick's snapshot and the fold per event as a
#                                     # workload's history grows to 10,000 past rollouts
#   bench/run.sh soak --save --minutes 12
#                                     # continuous deploys on two workloads: memory, open files, log
#                                     # size and rollout time over the run
#   bench/run.sh scale --save --workloads 10000
#                                     # that many workloads with a rollout each at once, through one
#                                     # router of the tier: lateness of steps due, memory, and the
#                                     # server SIGKILLed and restarted mid-run
#   bench/run.sh --save-as scale-postgres-1000 scale --workloads 1000 --store postgres
#                                     # the same on a durable PostgreSQL cluster the bench starts,
#                                     # its CPU measured beside the server's
#   bench/run.sh trust --save         # healthy rollouts (A/A) and detection through the real stack,
#                                     # half an hour or more; `trust --quick` is a 3-minute smoke run
#   bench/run.sh --save [ARGS...]     # also write bench/results/<benchmark>.txt, with a header
#                                     # saying where, when and from which commit it was measured
#   bench/run.sh --save-as exposure mitigation --weight 10 --blue-green --haproxy --rps 500 --runs 10
#                                     # the same, saved to bench/results/exposure.txt (--haproxy
#                                     # installs Debian's haproxy when it is missing)
#
# The benchmark's exit status is kept: 0 = every bar met, 3 = it ran but missed a bar (the
# results are still saved: a miss is a result), anything else = it could not run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

save=0
save_as=""
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --save) save=1 ;;
        --save-as)
            save=1
            save_as="${2:?--save-as needs a name}"
            shift
            ;;
        *) args+=("$1") ;;
    esac
    shift
done
# No subcommand (nothing, or only flags): the mitigation benchmark.
if [[ ${#args[@]} -eq 0 || "${args[0]}" == -* ]]; then
    args=(mitigation "${args[@]}")
fi
bench="${args[0]}"

cargo build --release -p ringfence -p ringfence-bench

# The router benchmark measures nginx and drives load with wrk, both from Debian's packages.
if [[ "$bench" == "router" ]] && { [[ ! -x /usr/sbin/nginx ]] || [[ ! -x /usr/bin/wrk ]]; }; then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    echo "run.sh: installing nginx-light and wrk" >&2
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nginx-light wrk >&2
fi

# `--haproxy` measures through Debian's HAProxy.
if [[ " ${args[*]} " == *" --haproxy "* ]] && [[ ! -x /usr/sbin/haproxy ]]; then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
    echo "run.sh: installing haproxy" >&2
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q haproxy >&2
fi

# Where cargo put it: $CARGO_TARGET_DIR when set (a relative one from here, as cargo reads it).
bin="${CARGO_TARGET_DIR:-target}/release/ringfence-bench"
if [[ $save -eq 0 ]]; then
    exec "$bin" "${args[@]}"
fi

if [[ ! "$bench" =~ ^[a-z0-9-]+$ ]]; then
    echo "run.sh: --save needs a benchmark name first, got '$bench'" >&2
    exit 2
fi
mkdir -p bench/results
name="${save_as:-$bench}"
if [[ ! "$name" =~ ^[a-z0-9-]+$ ]]; then
    echo "run.sh: --save-as needs a name of a-z, 0-9 and -, got '$name'" >&2
    exit 2
fi
out="bench/results/$name.txt"
saved_by="--save"
if [[ -n "$save_as" ]]; then saved_by="--save-as $save_as"; fi
tmp="$(mktemp "bench/results/.$bench.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# Numbers from a tree that differs from its commit are only reproducible with that difference
# known, so the changed paths are listed.
changed="$(git status --porcelain 2>/dev/null | awk '{print $NF}' | grep -v '^bench/results/' | paste -sd ' ' - || true)"
{
    echo "# ringfence benchmark: $bench"
    echo "# date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# host:    $(uname -srm), $(nproc) CPUs; load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# command: bench/run.sh $saved_by $(printf '%q ' "${args[@]}" | sed 's/ $//')"
    echo "# commit:  $commit"
    if [[ -n "$changed" ]]; then
        echo "# uncommitted changes in: $changed"
    fi
    echo
} >"$tmp"

# Only the results (stdout) go to the file; progress (stderr) stays on the terminal.
status=0
"$bin" "${args[@]}" | tee -a "$tmp" || status=$?
if [[ $status -eq 0 || $status -eq 3 ]]; then
    mv "$tmp" "$out"
    echo "run.sh: saved $out" >&2
else
    echo "run.sh: the benchmark failed (exit $status); $out left as it was" >&2
fi
exit "$status"
