#!/usr/bin/env bash
# What one nftables transaction costs the kernel, by table layout, at the sizes given.
#
# The stretch goal of issue 14 asks for a one-endpoint change whose cost does not grow with
# the number of Services. This script measures, for layouts that could carry that change,
# the kernel's share alone: the time of the batch's `sendmsg` (validation and commit run
# inside it), taken with `strace -T` around `nft -f`, median of 7 changes to different
# Services; and the same for loading the whole table at the largest size (a cold sync's
# kernel share). nft's own parsing and cache reads are outside those calls. See bench/README.md,
# "The stretch layout, measured", for the results and what they mean.
#
# Everything runs in a fresh network namespace that is removed on exit; nothing touches the
# host's ruleset. Needs root, nft and strace. Usage: bench/layouts/commit-cost.sh [sizes…]
# (default 100 10000).
set -euo pipefail

if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(100 10000); fi
for tool in nft strace; do
    command -v "$tool" >/dev/null || { echo "commit-cost.sh: $tool is needed" >&2; exit 1; }
done
ns="sluice-commit-cost-$$"
dir=$(mktemp -d)
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
nft_ns() { ip netns exec "$ns" nft "$@"; }

# Endpoint k of Service i, into $EP; Service i's address, into $VIP (no subshells: the
# builders run them 10,000s of times).
ep() { printf -v EP '10.%d.%d.%d' $((100 + 10 * $2)) $((($1 / 256) % 256)) $(($1 % 256)); }
vip() { printf -v VIP '172.16.%d.%d' $((($1 / 256) % 256)) $(($1 % 256)); }

# The parts every layout shares: Services reached through a verdict map from two NAT base
# chains (as sluice and kube-proxy do), and a data set in postrouting.
head_part() {
    cat <<EOF
table ip t {
 map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
 set hairpin { type ipv4_addr . ipv4_addr . inet_service ; }
 chain services { ip daddr . meta l4proto . th dport vmap @service-ips ; }
 chain nat-prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
 chain nat-output { type nat hook output priority -100; policy accept; jump services; }
 chain nat-postrouting {
  type nat hook postrouting priority 100; policy accept;
  ip saddr . ip daddr . th dport @hairpin masquerade
 }
EOF
}

# The verdict map's elements: Service i goes to chain svc<i>, or to the one chain $2 names.
vmap_elements() {
    local n=$1 i sep="" target
    printf 'add element ip t service-ips { '
    for ((i = 0; i < n; i++)); do
        vip "$i"
        target=${2:-svc$i}
        printf '%s%s . tcp . 80 : goto %s' "$sep" "$VIP" "$target"
        sep=", "
    done
    printf ' }\n'
}

# Layout "rules": today's (sluice and kube-proxy): a chain per Service, one dnat rule per
# endpoint.
build_rules() {
    local n=$1 i
    head_part
    for ((i = 0; i < n; i++)); do
        printf ' chain svc%d {\n' "$i"
        ep "$i" 0
        printf '  numgen random mod 3 == 0 meta l4proto tcp dnat to %s:80\n' "$EP"
        ep "$i" 1
        printf '  numgen random mod 2 == 0 meta l4proto tcp dnat to %s:80\n' "$EP"
        ep "$i" 2
        printf '  meta l4proto tcp dnat to %s:80\n }\n' "$EP"
    done
    echo "}"
    vmap_elements "$n"
}
change_rules() {
    local i=$1 k
    echo "flush chain ip t svc$i"
    for k in 0 1 2; do
        ep "$i" "$k"
        echo "add rule ip t svc$i numgen random mod $((4 - k)) == 0 meta l4proto tcp dnat to $EP:80"
    done
    ep "$i" 3
    echo "add rule ip t svc$i meta l4proto tcp dnat to $EP:80"
}

# The same table, changing nothing but one element of a data set.
change_element() {
    ep "$1" 3
    echo "add element ip t hairpin { $EP . $EP . 80 }"
}

# Layout "interval": each Service chain holds one rule, created once, that picks from a
# shared interval map: `numgen random mod 65536 offset <id << 16>`; a change rewrites ranges.
build_interval() {
    local n=$1 i k sep=""
    head_part
    echo ' map eps { typeof numgen random mod 2 : ip daddr . tcp dport ; flags interval ; }'
    for ((i = 0; i < n; i++)); do
        printf ' chain svc%d {\n  meta l4proto tcp dnat ip to numgen random mod 65536 offset %d map @eps\n }\n' \
            "$i" $((i << 16))
    done
    echo "}"
    vmap_elements "$n"
    printf 'add element ip t eps { '
    for ((i = 0; i < n; i++)); do
        for k in 0 1 2; do
            range "$i" 3 "$k"
            ep "$i" "$k"
            printf '%s%s : %s . 80' "$sep" "$RANGE" "$EP"
            sep=", "
        done
    done
    printf ' }\n'
}
# Share k of n equal shares of Service i's 65536 buckets, into $RANGE.
range() {
    printf -v RANGE '%d-%d' $((($1 << 16) + 65536 * $3 / $2)) $((($1 << 16) + 65536 * ($3 + 1) / $2 - 1))
}
change_interval() {
    local i=$1 k old=() new=()
    for k in 0 1 2; do
        range "$i" 3 "$k"
        old+=("$RANGE")
    done
    for k in 0 1 2 3; do
        range "$i" 4 "$k"
        ep "$i" "$k"
        new+=("$RANGE : $EP . 80")
    done
    (IFS=,; echo "delete element ip t eps { ${old[*]} }")
    (IFS=,; echo "add element ip t eps { ${new[*]} }")
}

# Layouts "ctmark-*": the Service chain's only changing rule stores the pick in the
# connection's mark (`ct set` has no validation hook), and a dnat rule maps the mark to an
# endpoint through a shared hash map; a change replaces that rule and adds one element.
# "ctmark-each": the dnat rule is in every Service chain (the map has one binding per chain).
# "ctmark-one": every Service chain ends in `goto endpoints`, the one dnat rule.
build_ctmark() {
    local n=$1 shared=$2 i k sep=""
    head_part
    echo ' map eps { typeof ct mark : ip daddr . tcp dport ; }'
    [ "$shared" = one ] && echo ' chain endpoints { meta l4proto tcp dnat ip to ct mark map @eps ; }'
    for ((i = 0; i < n; i++)); do
        printf ' chain svc%d {\n  ct mark set numgen random mod 3 offset %d\n' "$i" $((i << 12))
        if [ "$shared" = one ]; then
            printf '  goto endpoints\n }\n'
        else
            printf '  meta l4proto tcp dnat ip to ct mark map @eps\n }\n'
        fi
    done
    echo "}"
    vmap_elements "$n"
    printf 'add element ip t eps { '
    for ((i = 0; i < n; i++)); do
        for k in 0 1 2; do
            ep "$i" "$k"
            printf '%s%d : %s . 80' "$sep" $(((i << 12) + k)) "$EP"
            sep=", "
        done
    done
    printf ' }\n'
}
change_ctmark() {
    local i=$1 handle
    handle=$(nft_ns -a list chain ip t "svc$i" | sed -n 's/.*ct mark set.*# handle \([0-9]*\).*/\1/p')
    echo "replace rule ip t svc$i handle $handle ct mark set numgen random mod 4 offset $((i << 12))"
    ep "$i" 3
    echo "add element ip t eps { $(((i << 12) + 3)) : $EP . 80 }"
}

# Layout "chains-only": n empty regular chains and nothing else; the change adds one element.
build_chains_only() {
    local n=$1 i
    head_part
    for ((i = 0; i < n; i++)); do printf ' chain svc%d { }\n' "$i"; done
    echo "}"
}

# Layout "flat": no per-Service chain at all, only 3 elements per Service in a data set; the
# change adds one element. What any layout with a chain per Service cannot go below.
build_flat() {
    local n=$1 i k sep=""
    head_part
    echo "}"
    printf 'add element ip t hairpin { '
    for ((i = 0; i < n; i++)); do
        for k in 0 1 2; do
            ep "$i" "$k"
            printf '%s%s . %s . 80' "$sep" "$EP" "$EP"
            sep=", "
        done
    done
    printf ' }\n'
}

# Layout "data": no chain per Service (bench/src/sketch.rs, whose connection set-up rate
# `sluice-bench nftables` measures, is the same layout). A Service is map elements only: its
# endpoint count and its endpoints keyed by Service and bucket. The count, looked up into the
# destination address (which the dnat rewrites anyway), picks one of a few static chains
# whose one rule is `dnat … ct original ip daddr . … . numgen random mod <count> map
# @endpoints`. A change replaces the count and adds one endpoint: data only.
build_data() {
    local n=$1 i k sep=""
    head_part
    cat <<'EOF'
 map counts { type ipv4_addr . inet_proto . inet_service : ipv4_addr ; }
 map endpoints { typeof ip daddr . meta l4proto . th dport . numgen random mod 2 : ip daddr . th dport ; }
 map pick { type ipv4_addr : verdict ; }
 chain select {
  ip daddr set ip daddr . meta l4proto . th dport map @counts
  ip daddr vmap @pick
 }
EOF
    for ((k = 1; k <= 8; k++)); do
        printf ' chain pick%d {\n  meta l4proto tcp dnat ip to ct original ip daddr . meta l4proto . th dport . numgen random mod %d map @endpoints\n }\n' "$k" "$k"
    done
    echo "}"
    vmap_elements "$n" select
    printf 'add element ip t pick { 0.0.0.1 : goto pick1, 0.0.0.2 : goto pick2, 0.0.0.3 : goto pick3, 0.0.0.4 : goto pick4, 0.0.0.5 : goto pick5, 0.0.0.6 : goto pick6, 0.0.0.7 : goto pick7, 0.0.0.8 : goto pick8 }\n'
    printf 'add element ip t counts { '
    for ((i = 0; i < n; i++)); do
        vip "$i"
        printf '%s%s . tcp . 80 : 0.0.0.3' "$sep" "$VIP"
        sep=", "
    done
    printf ' }\n'
    sep=""
    printf 'add element ip t endpoints { '
    for ((i = 0; i < n; i++)); do
        vip "$i"
        for k in 0 1 2; do
            ep "$i" "$k"
            printf '%s%s . tcp . 80 . %d : %s . 80' "$sep" "$VIP" "$k" "$EP"
            sep=", "
        done
    done
    printf ' }\n'
}
change_data() {
    vip "$1"
    ep "$1" 3
    echo "delete element ip t counts { $VIP . tcp . 80 }"
    echo "add element ip t counts { $VIP . tcp . 80 : 0.0.0.4 }"
    echo "add element ip t endpoints { $VIP . tcp . 80 . 3 : $EP . 80 }"
}

# The batch's time in the kernel, in microseconds.
batch_us() {
    strace -f -qq -T -e trace=sendmsg ip netns exec "$ns" nft -f "$1" 2>&1 >/dev/null |
        sed -n 's/.*<\([0-9.]*\)>$/\1/p' | awk '{ s += $1 } END { printf "%d", s * 1e6 }'
}

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# measure <build> <change> <size>: the kernel's time loading the table into an empty
# namespace, into $COLD, and the median over 7 changes to Services spread over the table,
# into $MEDIAN. A table or a change nft refuses stops the script.
measure() {
    local build=$1 change=$2 n=$3 r i times=()
    nft_ns flush ruleset
    $build "$n" >"$dir/table.nft"
    nft_ns -c -f "$dir/table.nft"
    COLD=$(batch_us "$dir/table.nft")
    for r in 1 2 3 4 5 6 7; do
        i=$(((r * 1373) % n))
        $change "$i" >"$dir/change.nft"
        nft_ns -c -f "$dir/change.nft"
        times+=("$(batch_us "$dir/change.nft")")
    done
    MEDIAN=$(median "${times[@]}")
}

layouts=(
    "rules|build_rules|change_rules|today: a chain per Service, a dnat rule per endpoint; one endpoint added"
    "element|build_rules|change_element|the same table; one element added to a data set"
    "chains-only|build_chains_only|change_element|empty chains only; one element added"
    "flat|build_flat|change_element|no chain per Service, 3 elements per Service; one element added"
    "interval|build_interval|change_interval|one static rule per Service, shared interval map; 3 ranges replaced by 4"
    "ctmark-each|build_ctmark_each|change_ctmark|ct mark pick per Service, dnat in every chain; rule replaced + 1 element"
    "ctmark-one|build_ctmark_one|change_ctmark|ct mark pick per Service, one shared dnat rule; rule replaced + 1 element"
    "data|build_data|change_data|no chain per Service, shared dnat rules; count replaced + 1 endpoint element"
)
build_ctmark_each() { build_ctmark "$1" each; }
build_ctmark_one() { build_ctmark "$1" one; }

printf '%-12s' layout
for n in "${sizes[@]}"; do printf ' %12s' "µs at $n"; done
printf ' %7s %14s  %s\n' ratio "cold ms at ${sizes[-1]}" what
for entry in "${layouts[@]}"; do
    IFS='|' read -r name build change what <<<"$entry"
    printf '%-12s' "$name"
    results=()
    for n in "${sizes[@]}"; do
        measure "$build" "$change" "$n"
        results+=("$MEDIAN")
        printf ' %12s' "${results[-1]}"
    done
    awk -v a="${results[0]}" -v b="${results[-1]}" -v c="$COLD" \
        'BEGIN { printf " %7.1f %14.1f", (a > 0 ? b / a : 0), c / 1000 }'
    printf '  %s\n' "$what"
done
