#!/usr/bin/env bash
# Builds a Rocky Linux 9.3 root holding only what a scanner reads: its
# os-release and an rpm database in rpm's sqlite format (rpmdb.sqlite).
#
# The database is written by rpm itself (Debian's rpm 4.18, whose default
# backend is sqlite, as on RHEL/Rocky 9): each package is built by
# rpmbuild with the name, epoch, version, release and source rpm of a
# package of Rocky Linux 9.3's container image, and recorded with
# `rpm -i --justdb`. The packages hold no files; the headers are rpm's.
#
# Usage: make-rpmdb.sh ROOT
set -euo pipefail
root="$1"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# spec NAME EPOCH VERSION RELEASE [SUBPACKAGE]: one binary package, either
# NAME itself or SUBPACKAGE built from source NAME (e.g. openssl-libs
# from openssl-3.0.7-24.el9.src.rpm).
spec() {
  local name=$1 epoch=$2 version=$3 release=$4 sub=${5:-}
  {
    echo "Name: $name"
    [[ -n $epoch ]] && echo "Epoch: $epoch"
    echo "Version: $version"
    echo "Release: $release"
    echo "Summary: $name"
    echo "License: as upstream"
    echo "%define debug_package %{nil}"
    echo "%description"
    echo "$name"
    if [[ -n $sub ]]; then
      printf '%%package -n %s\nSummary: %s\n%%description -n %s\n%s\n%%files -n %s\n' "$sub" "$sub" "$sub" "$sub" "$sub"
    else
      echo "%files"
    fi
  } >"$work/$name.spec"
  rpmbuild --quiet -bb --define "_topdir $work/top" --define "_build_id_links none" "$work/$name.spec" >/dev/null
}

spec openssl 1 3.0.7 24.el9 openssl-libs
spec glibc "" 2.34 83.el9.7
spec bash "" 5.1.8 6.el9_1
spec chkconfig "" 1.24 1.el9 alternatives

mkdir -p "$root/var/lib/rpm" "$root/usr/lib" "$root/etc"
cp "$here/os-release" "$root/usr/lib/os-release"
ln -sf ../usr/lib/os-release "$root/etc/os-release"
rpm --dbpath "$root/var/lib/rpm" --initdb
# Debian's rpm warns that packages should go through alien; a database
# for another distribution is exactly what is wanted here.
rpm --dbpath "$root/var/lib/rpm" -i --justdb --nodeps --noscripts --notriggers --nosignature "$work"/top/RPMS/*/*.rpm 2>/dev/null
