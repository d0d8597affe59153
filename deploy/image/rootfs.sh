#!/usr/bin/env bash
# Assembles the Sluice image's root filesystem from scratch: the three Sluice binaries, the
# iptables tools (nft and legacy backends, IPv4 and IPv6) with their extensions, ipset, and
# exactly the shared libraries all of them load, CA certificates, and /etc/passwd +
# /etc/group. Nothing else: no shell, no package manager.
#
# Both image builds run this same script — scripts/image on a Debian 12 machine with no
# registry (binaries built by cargo on that machine) and deploy/Containerfile's conventional multi-stage
# build (in a debian:bookworm-slim stage) — and it ends by
# comparing the tree with deploy/image/contents.txt, the list of every path in the image: a
# build whose contents differ from that list fails, so both builds make the same image.
#
# Usage: rootfs.sh BIN_DIR OUT_DIR [CONTENTS]
#   BIN_DIR   holds sluice-overlay, sluice-proxy and sluice (the static CNI plugin)
#   OUT_DIR   created; must not exist
#   CONTENTS  the expected list (default: contents.txt next to this script); "-" skips the
#             check; with UPDATE_CONTENTS=1 the list is written instead
# The iptables tools, ipset, libraries and certificates come from the system this runs on (ldd
# resolves libraries there): install Debian's iptables, ipset and ca-certificates first.
set -euo pipefail
bin_dir=$(realpath "$1")
out=$(realpath -m "$2")
contents=${3:-$(dirname "$(realpath "$0")")/contents.txt}
[ "$contents" = - ] || contents=$(realpath -m "$contents")
multiarch=x86_64-linux-gnu
libdir=usr/lib/$multiarch

[ ! -e "$out" ] || { echo "rootfs.sh: $out exists" >&2; exit 1; }
mkdir -p "$out"
cd "$out"

# Debian's merged-/usr layout, so the dynamic loader and library paths are the usual ones.
mkdir -p usr/bin usr/sbin usr/local/bin "$libdir" usr/lib64 etc/ssl/certs run tmp
ln -s usr/bin bin
ln -s usr/sbin sbin
ln -s usr/lib lib
ln -s usr/lib64 lib64
chmod 1777 tmp

# The Sluice binaries.
for b in sluice-overlay sluice-proxy sluice; do
    install -m 0755 "$bin_dir/$b" "usr/local/bin/$b"
done

# iptables, both backends: the two multi-call binaries and every name the iptables and IPVS
# modes may call. The plain names are the nft backend (Debian's and most distributions'
# default); the -legacy names reach the legacy one.
install -m 0755 "/usr/sbin/xtables-nft-multi" "/usr/sbin/xtables-legacy-multi" usr/sbin/
for fam in iptables ip6tables; do
    for suffix in "" -save -restore; do
        ln -s xtables-nft-multi "usr/sbin/$fam-nft$suffix"
        ln -s xtables-legacy-multi "usr/sbin/$fam-legacy$suffix"
        ln -s xtables-nft-multi "usr/sbin/$fam$suffix"
    done
done
# The match and target extensions iptables loads at run time (dlopen: ldd cannot see them).
cp -a "/$libdir/xtables" "$libdir/xtables"
# ipset: the IPVS mode's sets (`ipset restore`, `ipset save`).
install -m 0755 /usr/sbin/ipset usr/sbin/ipset

# Every shared library the ELF files above load, and the dynamic loader. ldd resolves them on
# this system (the same Debian release the binaries were built against).
lib_list() {
    find usr -type f \( -perm -u+x -o -name '*.so*' \) -print0 |
        { xargs -0 -n1 ldd 2>/dev/null || true; } |
        awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u
}
for lib in $(lib_list); do
    real=$(readlink -f "$lib")
    dest=${real#/}
    [ -e "$dest" ] || { mkdir -p "$(dirname "$dest")" && cp --preserve=mode "$real" "$dest"; }
    # The name the binaries ask for (a symlink to the versioned file, as in Debian).
    name=$libdir/$(basename "$lib")
    if [ "$lib" != "$real" ] && [ ! -e "$name" ]; then
        ln -s "$(basename "$real")" "$name"
    fi
done
ln -s "../lib/$multiarch/ld-linux-x86-64.so.2" usr/lib64/ld-linux-x86-64.so.2

# CA certificates (the bundle update-ca-certificates writes).
install -m 0644 "/etc/ssl/certs/ca-certificates.crt" etc/ssl/certs/ca-certificates.crt

# Users: root for the containers that need capabilities, nonroot (65532) for anything else.
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n' >etc/passwd
printf 'root:x:0:\nnonroot:x:65532:\n' >etc/group
chmod 0644 etc/passwd etc/group

# The check: every path, its type and (for symlinks) its target.
listing() {
    find . -mindepth 1 -printf '%y %p %l\n' | sed 's/ $//' | LC_ALL=C sort
}
if [ "${UPDATE_CONTENTS:-}" = 1 ]; then
    listing >"$contents"
    echo "rootfs.sh: wrote $contents"
elif [ "$contents" != - ]; then
    if ! diff -u "$contents" <(listing) >&2; then
        echo "rootfs.sh: the image's contents differ from $contents (above: - expected, + built)." >&2
        echo "If the change is intended: scripts/image --update-contents" >&2
        exit 1
    fi
fi
echo "rootfs.sh: $(find . -mindepth 1 | wc -l) paths, $(du -sb . | cut -f1) bytes in $out"
