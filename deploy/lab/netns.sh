#!/usr/bin/env bash
# A multi-region berth lab on one machine, with Linux network namespaces.
# Real network isolation between nodes (partitions with nftables/iptables
# inside the node namespaces) and optional bandwidth limits (tc tbf).
# No latency emulation: this kernel has no netem. For emulated WAN latency
# use the loopback lab instead: cargo run --release -p berth-chaos --bin berth-lab
#
# Run as root. Touches nothing in the host (root) network namespace except
# creating and deleting its own namespaces (berthlab-*); every address it
# configures is loopback or 10.77.0.0/16, inside those namespaces.
set -euo pipefail

readonly PREFIX=berthlab
readonly NET_NS="${PREFIX}-net"
readonly CLIENT_NS="${PREFIX}-client"
readonly CLIENT_ADDR=10.77.0.10
readonly HTTP_PORT=5000
readonly PEER_PORT=7000
LAB_DIR="${BERTH_LAB_DIR:-/var/tmp/berth-lab}"
[[ ${LAB_DIR} == /* ]] || LAB_DIR="${PWD}/${LAB_DIR}"
LAB_DIR="${LAB_DIR%/}"
readonly LAB_DIR
readonly MARKER=.berthlab
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
SELF="${SCRIPT_DIR}/$(basename "${BASH_SOURCE[0]}")"
readonly SELF

usage() {
    cat <<EOF
usage: $(basename "$0") COMMAND [ARGS]

A multi-region berth cluster on this machine, one network namespace per node.
Must be run as root. State, data and logs live in \$BERTH_LAB_DIR
(default /var/tmp/berth-lab). The berth binary is \$BERTH_BIN, else berth
on PATH, else ./target/release/berth, else ./target/debug/berth.

commands:
  up [--regions eu,us,ap] [--nodes-per-region 1] [--rate-mbit N]
        Create the namespaces (bridge in ${NET_NS}, one namespace per node
        ${PREFIX}-<region><i> at 10.77.<region#>.<i>, a client namespace
        ${CLIENT_NS} at ${CLIENT_ADDR}), init the cluster with the
        berth CLI, start every node and wait until all are members.
        --rate-mbit N limits each node's link to N mbit/s each way (tc tbf).
        There is NO latency emulation in this mode (no netem on this
        kernel): for emulated WAN latency use the loopback lab,
        cargo run --release -p berth-chaos --bin berth-lab
  partition REGION
        Cut REGION's nodes off from the nodes of every other region (both
        directions, DROP, rules inside the region's node namespaces). The
        client namespace still reaches every node.
  heal  Remove every partition.
  status [ARGS]
        berth cluster status through the first node that answers (ARGS are
        passed on, e.g. --json).
  exec NODE CMD...
        Run CMD in NODE's namespace (NODE: eu1, us1, ..., client, or net
        for the bridge). A leading "berth" is replaced by the lab's binary.
  down [--keep]
        Stop the nodes, delete every ${PREFIX}-* namespace and remove the
        lab directory (kept with --keep). Safe to run again, and after a
        failed up.
EOF
}

die() {
    echo "netns.sh: error: $*" >&2
    exit 1
}

log() {
    echo "netns.sh: $*" >&2
}

need_root() {
    [[ ${EUID} -eq 0 ]] || die "must be run as root (network namespaces)"
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "$c is not installed"
    done
}

# The berth binary, as an absolute path.
find_berth() {
    local candidate
    if [[ -n ${BERTH_BIN:-} ]]; then
        candidate="${BERTH_BIN}"
        if [[ ${candidate} != */* ]]; then
            candidate="$(command -v "${candidate}" || true)"
        fi
        [[ -n ${candidate} && -x ${candidate} ]] || die "BERTH_BIN=${BERTH_BIN} is not an executable"
    elif command -v berth >/dev/null 2>&1; then
        candidate="$(command -v berth)"
    else
        local repo_root
        repo_root="$(cd "${SCRIPT_DIR}/../.." && pwd)"
        for candidate in ./target/release/berth ./target/debug/berth \
            "${repo_root}/target/release/berth" "${repo_root}/target/debug/berth" ""; do
            [[ -n ${candidate} && -x ${candidate} ]] && break
        done
        [[ -n ${candidate} ]] || die "no berth binary: set BERTH_BIN, put berth on PATH, or cargo build -p berth-node --release"
    fi
    echo "$(cd "$(dirname "${candidate}")" && pwd)/$(basename "${candidate}")"
}

# Names of the existing namespaces that belong to the lab.
lab_namespaces() {
    local name _rest
    ip netns list 2>/dev/null | while read -r name _rest; do
        if [[ ${name} =~ ^${PREFIX}-[a-z0-9-]+$ ]]; then
            echo "${name}"
        fi
    done
}

ns_exists() {
    local n
    while read -r n; do
        [[ ${n} == "$1" ]] && return 0
    done < <(lab_namespaces)
    return 1
}

# Run a command inside one of the lab's namespaces (never the host's).
in_ns() {
    local ns="$1"
    shift
    [[ ${ns} =~ ^${PREFIX}-[a-z0-9-]+$ ]] || die "refusing to run in namespace ${ns}"
    ip netns exec "${ns}" "$@"
}

# Node list written by up: "name region address" per line.
nodes_file() {
    echo "${LAB_DIR}/nodes"
}

# Call in the main shell (not in a <(...)) before read_nodes.
require_lab() {
    [[ -f ${LAB_DIR}/${MARKER} && -f ${LAB_DIR}/nodes ]] || die "no lab in ${LAB_DIR} (run up first, or set BERTH_LAB_DIR)"
}

read_nodes() {
    cat "${LAB_DIR}/nodes"
}

berth_bin_of_lab() {
    if [[ -f ${LAB_DIR}/berth.bin ]]; then
        cat "${LAB_DIR}/berth.bin"
    else
        find_berth
    fi
}

# ---------------------------------------------------------------- down

# True if pid $1 is a process in lab namespace $2 (and not this script).
pid_in_ns() {
    local pid="$1" ns="$2"
    [[ ${pid} =~ ^[0-9]+$ ]] || return 1
    # Never this script itself (e.g. `exec client netns.sh down`).
    [[ ${pid} != "$$" && ${pid} != "${BASHPID}" ]] || return 1
    kill -0 "${pid}" 2>/dev/null || return 1
    [[ "$(ip netns identify "${pid}" 2>/dev/null || true)" == "${ns}" ]]
}

# Stop the given pids (SIGTERM, then SIGKILL after 10 s), all at once.
stop_pids() {
    local pid i alive
    (($#)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "$@"; do
            kill -0 "${pid}" 2>/dev/null && alive=1
        done
        ((alive)) || return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "${pid}" 2>/dev/null; then
            log "pid ${pid} did not stop on SIGTERM; sending SIGKILL"
            kill -KILL "${pid}" 2>/dev/null || true
        fi
    done
}

cmd_down() {
    local keep=0
    while (($#)); do
        case "$1" in
            --keep) keep=1 ;;
            -h | --help) usage; return 0 ;;
            *) die "down: unknown argument $1" ;;
        esac
        shift
    done
    need_root
    local f name ns pid
    local -a pids=()
    # 1. The nodes, by their pid files (a pid is used only if that process
    #    is in the node's namespace: a stale file never hits another one).
    if [[ -d ${LAB_DIR}/run ]]; then
        for f in "${LAB_DIR}"/run/*.pid; do
            [[ -f ${f} ]] || continue
            name="$(basename "${f}" .pid)"
            pid="$(cat "${f}")"
            if pid_in_ns "${pid}" "${PREFIX}-${name}"; then
                pids+=("${pid}")
            fi
        done
    fi
    # 2. Anything else running inside a lab namespace (a failed up, a
    #    client command left behind).
    while read -r ns; do
        while read -r pid; do
            if pid_in_ns "${pid}" "${ns}" && [[ " ${pids[*]} " != *" ${pid} "* ]]; then
                pids+=("${pid}")
            fi
        done < <(ip netns pids "${ns}" 2>/dev/null || true)
    done < <(lab_namespaces)
    if ((${#pids[@]})); then
        log "stopping ${#pids[@]} process(es): ${pids[*]}"
        stop_pids "${pids[@]}"
    fi
    rm -f "${LAB_DIR}"/run/*.pid 2>/dev/null || true
    # 3. The namespaces.
    while read -r ns; do
        [[ ${ns} =~ ^${PREFIX}-[a-z0-9-]+$ ]] || continue
        ip netns del "${ns}" && log "deleted namespace ${ns}"
    done < <(lab_namespaces)
    # 4. The lab directory, only if it is one (has our marker).
    if ((keep == 0)) && [[ -d ${LAB_DIR} ]]; then
        if [[ -f ${LAB_DIR}/${MARKER} ]]; then
            rm -rf -- "${LAB_DIR}"
            log "removed ${LAB_DIR}"
        else
            log "${LAB_DIR} has no ${MARKER} marker: not removing it"
        fi
    fi
    return 0
}

# ---------------------------------------------------------------- up

# Connect namespace $1 to the bridge with interface eth0 at address $2.
# The veth is created inside the node namespace and its peer ($3) is moved
# straight into the bridge namespace: nothing appears in the host's.
attach() {
    local ns="$1" addr="$2" peer="$3" rate="$4"
    ip -n "${ns}" link add eth0 type veth peer name "${peer}" netns "${NET_NS}"
    ip -n "${NET_NS}" link set "${peer}" master br0
    ip -n "${NET_NS}" link set "${peer}" up
    ip -n "${ns}" addr add "${addr}/16" dev eth0
    ip -n "${ns}" link set eth0 up
    if [[ -n ${rate} ]]; then
        # Egress of each end: node -> bridge and bridge -> node.
        ip netns exec "${ns}" tc qdisc add dev eth0 root tbf rate "${rate}mbit" burst 64kb latency 50ms
        ip netns exec "${NET_NS}" tc qdisc add dev "${peer}" root tbf rate "${rate}mbit" burst 64kb latency 50ms
    fi
}

new_ns() {
    local ns="$1"
    [[ ${ns} =~ ^${PREFIX}-[a-z0-9-]+$ ]] || die "bad namespace name ${ns}"
    ip netns add "${ns}"
    ip -n "${ns}" link set lo up
}

wait_http() {
    local ns="$1" url="$2" secs="$3" i
    for ((i = 0; i < secs * 2; i++)); do
        if in_ns "${ns}" curl -fsS -m 2 -o /dev/null "${url}" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

start_node() {
    local name="$1" berth="$2"
    local ns="${PREFIX}-${name}"
    local pidf="${LAB_DIR}/run/${name}.pid"
    # setsid (not a group leader here), nohup and ip netns exec all exec:
    # $! is berth's own pid.
    # setsid: the node outlives this shell and its terminal's Ctrl-C.
    setsid nohup ip netns exec "${ns}" "${berth}" node start --data-dir "${LAB_DIR}/${name}" \
        >>"${LAB_DIR}/logs/${name}.log" 2>&1 </dev/null &
    echo "$!" >"${pidf}"
}

# From `berth cluster status --json`: "MEMBERS VOTERS LEADER", members being
# the nodes in the membership (voters and learners), LEADER 0 if none.
parse_status() {
    local json="$1"
    if command -v jq >/dev/null 2>&1; then
        jq -r '[([.nodes[] | select(.role == "voter" or .role == "learner")] | length),
                ([.nodes[] | select(.role == "voter")] | length), (.leader // 0)] | map(tostring) | join(" ")' <<<"${json}"
    else
        local members voters leader
        members="$(grep -cE '"role": "(voter|learner)"' <<<"${json}" || true)"
        voters="$(grep -cE '"role": "voter"' <<<"${json}" || true)"
        leader="$(sed -nE 's/^  "leader": ([0-9]+),?$/\1/p' <<<"${json}" | head -n1)"
        echo "${members} ${voters} ${leader:-0}"
    fi
}

on_up_failure() {
    local rc=$?
    trap - EXIT
    if ((rc != 0)); then
        log "up failed (exit ${rc}); stopping the nodes and deleting the namespaces"
        if [[ -d ${LAB_DIR}/logs ]]; then
            log "logs kept in ${LAB_DIR}/logs; '$(basename "$0") down' removes them"
            tail -n 5 "${LAB_DIR}"/logs/*.log >&2 2>/dev/null || true
        fi
        cmd_down --keep || true
    fi
    exit "${rc}"
}

cmd_up() {
    local regions_arg="eu,us,ap" per_region=1 rate=""
    while (($#)); do
        case "$1" in
            --regions) regions_arg="${2:?--regions needs a value}"; shift ;;
            --regions=*) regions_arg="${1#*=}" ;;
            --nodes-per-region) per_region="${2:?--nodes-per-region needs a value}"; shift ;;
            --nodes-per-region=*) per_region="${1#*=}" ;;
            --rate-mbit) rate="${2:?--rate-mbit needs a value}"; shift ;;
            --rate-mbit=*) rate="${1#*=}" ;;
            -h | --help) usage; return 0 ;;
            *) die "up: unknown argument $1" ;;
        esac
        shift
    done
    need_root
    need_cmd ip tc curl
    if ! [[ ${per_region} =~ ^[1-9][0-9]{0,2}$ ]] || ((per_region > 254)); then
        die "--nodes-per-region must be 1..254"
    fi
    [[ -z ${rate} || ${rate} =~ ^[1-9][0-9]*$ ]] || die "--rate-mbit must be a positive integer"
    local -a regions=()
    local r seen=" "
    IFS=',' read -r -a regions <<<"${regions_arg}"
    ((${#regions[@]} >= 1 && ${#regions[@]} <= 254)) || die "--regions: give 1..254 regions"
    for r in "${regions[@]}"; do
        # Ends with a letter so that <region><i> is unambiguous; short enough
        # for interface names (v-<region><i> within 15 characters).
        [[ ${r} =~ ^[a-z]([a-z0-9-]{0,7}[a-z])?$ ]] || die "region '${r}': use a-z, 0-9, '-', start and end with a letter, at most 9 characters"
        [[ ${r} != client && ${r} != net ]] || die "region '${r}' is reserved"
        [[ ${seen} != *" ${r} "* ]] || die "region '${r}' given twice"
        seen+="${r} "
    done

    local existing
    existing="$(lab_namespaces | tr '\n' ' ')"
    [[ -z ${existing// /} ]] || die "lab namespaces already exist (${existing% }); run '$(basename "$0") down' first"
    if [[ -e ${LAB_DIR} && ! -f ${LAB_DIR}/${MARKER} ]] && [[ -n "$(ls -A "${LAB_DIR}" 2>/dev/null)" ]]; then
        die "${LAB_DIR} exists and is not a lab directory; choose another BERTH_LAB_DIR"
    fi
    if [[ -f ${LAB_DIR}/${MARKER} ]]; then
        log "removing the previous lab's ${LAB_DIR}"
        rm -rf -- "${LAB_DIR}"
    fi

    local berth
    berth="$(find_berth)"
    log "berth binary: ${berth}"

    trap on_up_failure EXIT
    mkdir -p "${LAB_DIR}/logs" "${LAB_DIR}/run"
    chmod 700 "${LAB_DIR}"
    : >"${LAB_DIR}/${MARKER}"
    echo "${berth}" >"${LAB_DIR}/berth.bin"
    : >"$(nodes_file)"

    # The bridge namespace and the client.
    new_ns "${NET_NS}"
    ip -n "${NET_NS}" link add br0 type bridge
    ip -n "${NET_NS}" link set br0 up
    new_ns "${CLIENT_NS}"
    attach "${CLIENT_NS}" "${CLIENT_ADDR}" v-client ""

    # One namespace per node.
    local ri i name addr
    for ri in "${!regions[@]}"; do
        r="${regions[ri]}"
        for ((i = 1; i <= per_region; i++)); do
            name="${r}${i}"
            addr="10.77.$((ri + 1)).${i}"
            new_ns "${PREFIX}-${name}"
            attach "${PREFIX}-${name}" "${addr}" "v-${name}" "${rate}"
            echo "${name} ${r} ${addr}" >>"$(nodes_file)"
        done
    done
    log "namespaces ready: $(lab_namespaces | tr '\n' ' ')"

    # The cluster, through the real CLI.
    local -a nodes=()
    mapfile -t nodes <"$(nodes_file)"
    local first_name first_region first_addr
    read -r first_name first_region first_addr <<<"${nodes[0]}"
    local pwfile="${LAB_DIR}/admin.password"
    local pw
    pw="$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')"
    (umask 077 && printf '%s\n' "${pw:0:24}" >"${pwfile}")
    local out
    out="$(in_ns "${PREFIX}-${first_name}" "${berth}" cluster init \
        --data-dir "${LAB_DIR}/${first_name}" --region "${first_region}" \
        --http "${first_addr}:${HTTP_PORT}" --peer "${first_addr}:${PEER_PORT}" \
        --admin-password-file "${pwfile}" 2>>"${LAB_DIR}/logs/${first_name}.log")" ||
        die "berth cluster init failed on ${first_name} (see ${LAB_DIR}/logs/${first_name}.log)"
    # The output without its last line, the join token (kept in join.token).
    sed '$d' <<<"${out}" >>"${LAB_DIR}/logs/${first_name}.log"
    local token
    token="$(tail -n1 <<<"${out}")"
    [[ -n ${token} ]] || die "cluster init printed no join token"
    (umask 077 && echo "${token}" >"${LAB_DIR}/join.token")
    log "initialized the cluster on ${first_name} (${first_addr})"
    start_node "${first_name}" "${berth}"
    wait_http "${PREFIX}-${first_name}" "http://${first_addr}:${HTTP_PORT}/health" 60 ||
        die "${first_name} did not answer on http://${first_addr}:${HTTP_PORT}/health (see ${LAB_DIR}/logs/${first_name}.log)"

    local line rg
    for line in "${nodes[@]:1}"; do
        read -r name rg addr <<<"${line}"
        in_ns "${PREFIX}-${name}" "${berth}" cluster join \
            --data-dir "${LAB_DIR}/${name}" --region "${rg}" \
            --http "${addr}:${HTTP_PORT}" --peer "${addr}:${PEER_PORT}" \
            --seed "${first_addr}:${PEER_PORT}" --token "${token}" \
            >>"${LAB_DIR}/logs/${name}.log" 2>&1 ||
            die "${name} could not join (see ${LAB_DIR}/logs/${name}.log)"
        log "${name} joined"
        start_node "${name}" "${berth}"
        wait_http "${PREFIX}-${name}" "http://${addr}:${HTTP_PORT}/health" 60 ||
            die "${name} did not answer on http://${addr}:${HTTP_PORT}/health (see ${LAB_DIR}/logs/${name}.log)"
    done

    # Every node a member, and a leader; then the voters the cluster picks
    # for nodes of role auto (raft/src/membership.rs: up to 5, an odd
    # number), so that a drill right after up meets the final voter set.
    local want=${#nodes[@]} members=0 voters=0 leader=0 json
    local want_voters=$((want < 5 ? want : 5))
    ((want_voters % 2 == 1)) || want_voters=$((want_voters - 1))
    local settled_at=-1
    for ((i = 0; i < 240; i++)); do
        if json="$(in_ns "${PREFIX}-${first_name}" "${berth}" cluster status --json \
            --data-dir "${LAB_DIR}/${first_name}" 2>/dev/null)"; then
            read -r members voters leader <<<"$(parse_status "${json}")"
            if ((members == want && leader != 0)); then
                ((voters == want_voters)) && break
                ((settled_at >= 0)) || settled_at=${i}
                # Voter promotion is the cluster's business: after 30 s more,
                # go on with what it has.
                if ((i - settled_at >= 60)); then
                    log "warning: ${voters} voters, expected ${want_voters}; going on"
                    break
                fi
            fi
        fi
        sleep 0.5
    done
    ((members == want && leader != 0)) ||
        die "the cluster did not reach ${want} members with a leader in 120 s (members ${members}, leader ${leader})"
    log "cluster ready: ${members} members, ${voters} voters, leader node ${leader}"
    trap - EXIT

    summary "${berth}" "${rate}"
}

summary() {
    local berth="$1" rate="$2" name region addr me
    me="$(basename "$0")"
    [[ ${SELF} == */deploy/lab/netns.sh ]] && me="deploy/lab/netns.sh"
    echo
    echo "berth lab up: $(wc -l <"$(nodes_file)") nodes, data and logs in ${LAB_DIR}"
    printf '  %-10s %-10s %-12s %-28s %s\n' NODE REGION ADDRESS REGISTRY NAMESPACE
    while read -r name region addr; do
        printf '  %-10s %-10s %-12s %-28s %s\n' "${name}" "${region}" "${addr}" "http://${addr}:${HTTP_PORT}" "${PREFIX}-${name}"
    done <"$(nodes_file)"
    printf '  %-10s %-10s %-12s %-28s %s\n' client - "${CLIENT_ADDR}" - "${CLIENT_NS}"
    if [[ -n ${rate} ]]; then
        echo "links limited to ${rate} mbit/s each way (tc tbf); no latency emulation (no netem here)"
    else
        echo "links unlimited; no latency emulation in this mode (no netem here)"
    fi
    echo "admin login: user admin, password in ${LAB_DIR}/admin.password"
    read -r name region addr <"$(nodes_file)"
    echo
    echo "try:"
    echo "  ip netns exec ${CLIENT_NS} curl http://${addr}:${HTTP_PORT}/v2/"
    echo "  ip netns exec ${CLIENT_NS} curl -u admin:\$(cat ${LAB_DIR}/admin.password) http://${addr}:${HTTP_PORT}/v2/_catalog"
    echo "  ip netns exec ${CLIENT_NS} skopeo copy --dest-tls-verify=false --dest-creds admin:\$(cat ${LAB_DIR}/admin.password) docker-archive:img.tar docker://${addr}:${HTTP_PORT}/team/app:1"
    echo "  ${me} exec ${name} berth cluster status --data-dir ${LAB_DIR}/${name}"
    echo "  ${me} status"
    echo "  ${me} partition ${region}; ${me} heal"
    echo "  ${me} down"
    echo "(berth in exec is ${berth})"
}

# ---------------------------------------------------------------- partition / heal

have_nft() {
    command -v nft >/dev/null 2>&1
}

# Remove the lab's rules from one namespace (nothing if there are none).
clear_rules() {
    local ns="$1"
    if have_nft; then
        in_ns "${ns}" nft delete table inet berthlab 2>/dev/null || true
    fi
    if command -v iptables >/dev/null 2>&1; then
        if in_ns "${ns}" iptables -w -n -L BERTHLAB >/dev/null 2>&1; then
            in_ns "${ns}" iptables -w -D INPUT -j BERTHLAB 2>/dev/null || true
            in_ns "${ns}" iptables -w -D OUTPUT -j BERTHLAB 2>/dev/null || true
            in_ns "${ns}" iptables -w -F BERTHLAB
            in_ns "${ns}" iptables -w -X BERTHLAB
        fi
    fi
}

cmd_partition() {
    local region="${1:-}"
    [[ -n ${region} ]] || die "partition: which region? (partition REGION)"
    (($# == 1)) || die "partition takes one region"
    need_root
    require_lab
    local -a mine=() others=()
    local name rg addr
    while read -r name rg addr; do
        if [[ ${rg} == "${region}" ]]; then
            mine+=("${name}")
        else
            others+=("${addr}")
        fi
    done < <(read_nodes)
    ((${#mine[@]})) || die "no region ${region} in this lab (regions: $(awk '{print $2}' "$(nodes_file)" | sort -u | tr '\n' ' '))"
    ((${#others[@]})) || die "region ${region} is the only region: nothing to cut it off from"
    local ns set
    set="$(IFS=,; echo "${others[*]}")"
    for name in "${mine[@]}"; do
        ns="${PREFIX}-${name}"
        ns_exists "${ns}" || die "namespace ${ns} does not exist"
        clear_rules "${ns}"
        if have_nft; then
            in_ns "${ns}" nft -f - <<EOF
table inet berthlab {
    set cut { type ipv4_addr; elements = { ${set} } }
    chain input { type filter hook input priority -10; policy accept; ip saddr @cut drop; }
    chain output { type filter hook output priority -10; policy accept; ip daddr @cut drop; }
}
EOF
        else
            need_cmd iptables
            in_ns "${ns}" iptables -w -N BERTHLAB
            for addr in "${others[@]}"; do
                in_ns "${ns}" iptables -w -A BERTHLAB -s "${addr}" -j DROP
                in_ns "${ns}" iptables -w -A BERTHLAB -d "${addr}" -j DROP
            done
            in_ns "${ns}" iptables -w -I INPUT 1 -j BERTHLAB
            in_ns "${ns}" iptables -w -I OUTPUT 1 -j BERTHLAB
        fi
        log "${name}: dropping traffic to and from ${set//,/ }"
    done
    log "region ${region} is cut off from the other regions ('heal' restores it)"
}

cmd_heal() {
    (($# == 0)) || die "heal takes no argument"
    need_root
    require_lab
    local name _rg _addr ns
    while read -r name _rg _addr; do
        ns="${PREFIX}-${name}"
        ns_exists "${ns}" && clear_rules "${ns}"
    done < <(read_nodes)
    log "healed: no partition rules left"
}

# ---------------------------------------------------------------- status / exec

cmd_status() {
    need_root
    require_lab
    local berth name _rg addr ns pid
    berth="$(berth_bin_of_lab)"
    # The first running node whose /health answers runs the status (once:
    # its exit code is ours).
    while read -r name _rg addr; do
        ns="${PREFIX}-${name}"
        ns_exists "${ns}" || continue
        pid="$(cat "${LAB_DIR}/run/${name}.pid" 2>/dev/null || true)"
        pid_in_ns "${pid}" "${ns}" || continue
        if in_ns "${ns}" curl -fsS -m 2 -o /dev/null "http://${addr}:${HTTP_PORT}/health" 2>/dev/null; then
            exec ip netns exec "${ns}" "${berth}" cluster status --data-dir "${LAB_DIR}/${name}" "$@"
        fi
        log "${name} does not answer; trying the next node"
    done < <(read_nodes)
    die "no running node answered"
}

cmd_exec() {
    local node="${1:-}"
    [[ -n ${node} ]] || die "exec: which node? (exec NODE CMD...)"
    shift
    (($#)) || die "exec: which command? (exec NODE CMD...)"
    need_root
    node="${node#"${PREFIX}-"}"
    [[ ${node} =~ ^[a-z0-9-]+$ ]] || die "exec: bad node name ${node}"
    local ns="${PREFIX}-${node}"
    ns_exists "${ns}" || die "no namespace ${ns} (have: $(lab_namespaces | sed "s/^${PREFIX}-//" | tr '\n' ' '))"
    if [[ $1 == berth ]]; then
        shift
        set -- "$(berth_bin_of_lab)" "$@"
    fi
    exec ip netns exec "${ns}" "$@"
}

main() {
    local cmd="${1:-}"
    (($#)) && shift
    case "${cmd}" in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        partition) cmd_partition "$@" ;;
        heal) cmd_heal "$@" ;;
        status) cmd_status "$@" ;;
        exec) cmd_exec "$@" ;;
        -h | --help | help) usage ;;
        "") usage >&2; exit 2 ;;
        *) usage >&2; die "unknown command ${cmd}" ;;
    esac
}

main "$@"
