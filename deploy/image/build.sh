#!/usr/bin/env bash
# Builds berth's container image from a berth binary and the shared
# libraries it links, on an empty base: nothing is pulled from any registry,
# so it works offline. The image runs as the unprivileged user berth
# (10001:10001) and keeps its data in the volume /var/lib/berth.
#
#   deploy/image/build.sh [--binary PATH] [--tag NAME] [--output TRANSPORT:REF]
#
# --binary   the berth binary (default: build target/release/berth first)
# --tag      image name (default: berth:<version>)
# --output   where buildah commits it (default: oci-archive:target/berth-image.tar;
#            docker-archive:FILE for `docker load`, containers-storage:NAME, ...)
#
# Needs buildah (Debian: apt-get install buildah), run as root or in a user
# namespace. deploy/image/Containerfile is the same image built on a Debian
# base for those who build with a registry at hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '==> %s\n' "$*" >&2; }

binary="" tag="" output=""
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tag="${tag:-berth:$version}"
target_dir="${CARGO_TARGET_DIR:-target}"
output="${output:-oci-archive:$target_dir/berth-image.tar}"
if [[ -z "$binary" ]]; then
  say "building the release binary (cargo build --release -p berth-node --bin berth)"
  ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}" cargo build --release --locked -p berth-node --bin berth
  binary="$target_dir/release/berth"
fi
[[ -x "$binary" ]] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
say "assembling the root filesystem from $binary and the libraries it links"
chmod 0755 "$root"
install -d -m 0755 "$root/usr/bin" "$root/etc/berth" "$root/etc/ssl/certs"
install -d -m 1777 "$root/tmp"
install -d -m 0755 "$root/var/lib"
# Debug information is of no use in the image and is most of a debug build.
objcopy --strip-debug "$binary" "$root/usr/bin/berth"
chmod 0755 "$root/usr/bin/berth"
# Every shared library the dynamic linker resolves, at the path it resolves
# it to, plus the linker itself: the binary then runs exactly as on the
# machine that built it.
ldd "$binary" | grep -oE '(=> )?/[^ ]+' | sed 's/^=> //' | sort -u | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
# Mirroring and notifications reach TLS servers: the system's roots.
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nberth:x:10001:10001:berth:/var/lib/berth:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nberth:x:10001:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
data="$(mktemp -d)"
chmod 0700 "$data"

say "committing $tag to $output"
bh=(buildah --storage-driver vfs)
ctr="$("${bh[@]}" from scratch)"
cleanup() { "${bh[@]}" rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$root" "$data"; }
trap cleanup EXIT
"${bh[@]}" copy "$ctr" "$root/" / >/dev/null
# The data directory is the node's own: owned by berth, closed to others.
"${bh[@]}" copy --chown 10001:10001 "$ctr" "$data/" /var/lib/berth >/dev/null
"${bh[@]}" config \
  --user 10001:10001 \
  --workingdir /var/lib/berth \
  --env BERTH_DATA_DIR=/var/lib/berth \
  --volume /var/lib/berth \
  --port 5000/tcp --port 7000/tcp --port 7000/udp \
  --entrypoint '["/usr/bin/berth"]' \
  --cmd '["node","start"]' \
  --label org.opencontainers.image.title=berth \
  --label "org.opencontainers.image.version=$version" \
  --stop-signal SIGTERM \
  "$ctr"
case "$output" in
  oci-archive:*|docker-archive:*)
    mkdir -p "$(dirname "${output#*:}")"
    rm -f "${output#*:}"
    dest="$output:$tag" ;;
  *) dest="$output" ;;
esac
"${bh[@]}" commit --quiet --rm "$ctr" "$dest" >/dev/null
say "done: $tag in $output"
