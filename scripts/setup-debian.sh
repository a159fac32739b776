#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, once.
# Safe to run again: it installs only what is missing.
#
# Build: clang/libclang (bindgen), Debian's RocksDB, and make (jemalloc,
# the berth binary's allocator, is built from its source with it).
# Tests: the real registry clients the tests drive (docker's daemon,
# podman, skopeo, buildah, containerd's ctr, curl), promtool (package
# prometheus; its daemon is not started), systemd-analyze (package systemd,
# for the unit's check; no init system is started), the CNCF registry
# (docker-registry) with htpasswd (apache2-utils) and tinyproxy as the
# mirroring tests' upstream and proxy, openssl for their TLS upstream's CA,
# binutils (objcopy) and docker-compose for the image and compose tests,
# debootstrap and dpkg-dev for the package's install test on a fresh Debian root,
# chromium and chromium-driver (the console's browser test drives it over
# WebDriver), slapd and ldap-utils as the LDAP sign-in test's directory
# (started by the test as an ordinary process; the package's own service is
# not used), golang-go (the scanner's Go build-info test builds a small
# program with it, offline, from a file-system module proxy), rpm (the
# scanner's rpm test writes a real rpmdb.sqlite with rpmbuild and rpm),
# libsqlite3-dev (the scanner reads rpm's sqlite database), and from
# PyPI oras, openapi-spec-validator and schemathesis (Debian 12 marks its Python externally managed, hence
# --break-system-packages).
set -euo pipefail
packages=(clang libclang-dev librocksdb-dev make pkg-config ca-certificates curl tar
          docker.io podman skopeo buildah containerd python3-pip prometheus systemd
          docker-registry apache2-utils tinyproxy openssl slapd ldap-utils
          binutils docker-compose debootstrap dpkg-dev chromium chromium-driver
          python3-cryptography python3-urllib3 python3-requests python3-packaging
          golang-go rpm libsqlite3-dev)
# kubectl renders the Kubernetes manifests (its kustomize); Debian's comes
# with kubernetes-client, unless another kubectl is installed already.
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ((${#missing[@]})); then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
# oras for the artifact tests; openapi-spec-validator and schemathesis check the admin API's OpenAPI document;
# aiosmtpd is the SMTP server the e-mail notification test sends to;
# kubernetes-validate checks the rendered manifests against Kubernetes' schemas;
# cyclonedx-python-lib's JSON validator checks the scanner's SBOM against CycloneDX's schema.
if ! python3 -c 'import oras, requests, openapi_spec_validator, schemathesis, aiosmtpd, kubernetes_validate, cyclonedx.validation.json, jsonschema' 2>/dev/null || ! command -v schemathesis >/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages oras requests openapi-spec-validator schemathesis aiosmtpd kubernetes-validate 'cyclonedx-python-lib[json-validation]'
fi
