#!/usr/bin/env bash
# Builds the previous release of berth (deploy/PREVIOUS_RELEASE names its
# commit) once, and prints the path of its binary:
#   ~/.cache/berth-previous/<commit>/berth
#
# The source comes from this clone's history (git archive), so it needs no
# network. The build reuses what the current tree's build compiled: the
# dependencies in $CARGO_TARGET_DIR (or ./target) are hard-linked into a
# scratch target dir, so only berth's own crates are compiled again, and
# the current tree's binary is never overwritten.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
say() { printf '==> %s\n' "$*" >&2; }
rev="$(grep -v '^#' "$repo/deploy/PREVIOUS_RELEASE" | awk 'NF { print $2; exit }')"
version="$(grep -v '^#' "$repo/deploy/PREVIOUS_RELEASE" | awk 'NF { print $1; exit }')"
cache="${BERTH_PREVIOUS_CACHE:-$HOME/.cache/berth-previous}"
out="$cache/$rev"
if [[ -x "$out/berth" ]]; then
  echo "$out/berth"
  exit 0
fi
git -C "$repo" cat-file -e "$rev^{commit}" 2>/dev/null \
  || { echo "previous-release.sh: commit $rev (berth $version) is not in this clone's history (a shallow clone? git fetch --unshallow)" >&2; exit 1; }
say "building the previous release, berth $version ($rev), once into $out"
work="$(mktemp -d "${TMPDIR:-/tmp}/berth-previous.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/target/debug"
git -C "$repo" archive "$rev" | tar -x -C "$work/src"
main_target="${CARGO_TARGET_DIR:-$repo/target}"
for d in deps build .fingerprint; do
  [[ -d "$main_target/debug/$d" ]] && cp -al "$main_target/debug/$d" "$work/target/debug/"
done
# The hard-linked copies of berth's own crates belong to the current tree.
rm -rf "$work/target/debug/.fingerprint"/berth-*
(cd "$work/src" && CARGO_TARGET_DIR="$work/target" ROCKSDB_LIB_DIR="${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}" \
  cargo build --quiet --locked -p berth-node --bin berth)
mkdir -p "$out"
cp "$work/target/debug/berth" "$out/berth.part"
mv "$out/berth.part" "$out/berth"
say "built $out/berth"
echo "$out/berth"
