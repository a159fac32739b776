#!/usr/bin/env bash
# Builds berth's Debian package: the binary, a `berth` system user, /etc/berth,
# /var/lib/berth and the systemd unit (not enabled: a node must be created
# with `berth cluster init` or `cluster join` first, see deploy/UPGRADING.md
# and the README).
#
#   deploy/debian/build-deb.sh [--binary PATH] [--out DIR]
#
# --binary  the berth binary (default: build target/release/berth first)
# --out     where the .deb goes (default: the target dir)
#
# Dependencies are the packages that hold the shared libraries the binary
# links on this machine, at least at the versions installed here.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '==> %s\n' "$*" >&2; }

binary="" out=""
while (($#)); do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "build-deb.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
target_dir="${CARGO_TARGET_DIR:-target}"
out="${out:-$target_dir}"
if [[ -z "$binary" ]]; then
  say "building the release binary (cargo build --release -p berth-node --bin berth)"
  ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}" cargo build --release --locked -p berth-node --bin berth
  binary="$target_dir/release/berth"
fi
[[ -x "$binary" ]] || { echo "build-deb.sh: $binary is not an executable" >&2; exit 1; }
arch="$(dpkg --print-architecture)"

pkg="$(mktemp -d)"
trap 'rm -rf "$pkg"' EXIT
chmod 0755 "$pkg"
say "laying out the package"
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/berth" "$pkg/usr/share/doc/berth"
objcopy --strip-debug "$binary" "$pkg/usr/bin/berth"
chmod 0755 "$pkg/usr/bin/berth"
# The packaged binary lives in /usr/bin; the unit in the tree names the
# /usr/local/bin of a hand install.
sed 's|/usr/local/bin/berth|/usr/bin/berth|g' deploy/systemd/berth.service > "$pkg/lib/systemd/system/berth.service"
cat > "$pkg/etc/berth/berth.env" <<'ENV'
# Environment of the berth service (systemctl edit berth for more).
# Log filter: error, warn, info, debug, per module as in RUST_LOG
# (unset: berth's default, info without openraft's per-retry noise).
#BERTH_LOG=info
ENV
cp README.md "$pkg/usr/share/doc/berth/README.md"
[[ -f deploy/UPGRADING.md ]] && cp deploy/UPGRADING.md "$pkg/usr/share/doc/berth/"

depends="adduser"
while read -r lib; do
  owner="$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1)" || true
  [[ -z "$owner" ]] && owner="$(dpkg -S "$lib" 2>/dev/null | head -1 | cut -d: -f1)" || true
  [[ -z "$owner" ]] && { echo "build-deb.sh: no Debian package holds $lib" >&2; exit 1; }
  ver="$(dpkg-query -W -f='${Version}' "$owner")"
  depends+=", $owner (>= ${ver%%-*})"
done < <(ldd "$binary" | grep -oE '=> /[^ ]+' | sed 's/^=> //' | sort -u)
depends="$(tr ',' '\n' <<<"$depends" | sed 's/^ *//' | sort -u | paste -sd, | sed 's/,/, /g')"

cat > "$pkg/DEBIAN/control" <<CONTROL
Package: berth
Version: $version
Architecture: $arch
Maintainer: berth maintainers <berth@localhost>
Depends: $depends
Section: net
Priority: optional
Installed-Size: $(du -sk "$pkg" | cut -f1)
Description: container registry cluster
 Nodes in several regions form one OCI registry: metadata replicated with
 Raft, blobs copied between nodes over QUIC. Any node takes docker push and
 serves docker pull; an acknowledged push survives the loss of any one node.
CONTROL
echo "/etc/berth/berth.env" > "$pkg/DEBIAN/conffiles"
cat > "$pkg/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd berth >/dev/null; then
    adduser --system --group --home /var/lib/berth --no-create-home --shell /usr/sbin/nologin --gecos "berth registry" berth >/dev/null
  fi
  install -d -o berth -g berth -m 0700 /var/lib/berth
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
  fi
  if [ ! -f /var/lib/berth/berth.toml ]; then
    echo "berth: create this node first, as the berth user, then start it:"
    echo "  sudo -u berth berth cluster init --data-dir /var/lib/berth --region R --http ADDR --peer ADDR   (or cluster join)"
    echo "  systemctl enable --now berth"
  fi
fi
exit 0
POSTINST
cat > "$pkg/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop berth >/dev/null 2>&1 || true
fi
exit 0
PRERM
cat > "$pkg/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
# The node's data (/var/lib/berth) and the berth user stay, even on purge:
# a registry's images are not removed along with its software.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
POSTRM
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/berth_${version}_${arch}.deb"
say "writing $deb"
dpkg-deb --root-owner-group -Zgzip -z3 --build "$pkg" "$deb" >/dev/null
say "done: $deb"
echo "$deb"
