#!/usr/bin/env bash
# Make the base image `debian:bookworm-slim` available to the local Docker engine.
#
#   1. already there                      -> nothing to do
#   2. `docker pull` (at most $BASE_IMAGE_PULL_TIMEOUT s, default 20) -> done
#   3. cached tarball $OPTASIA_CACHE/base/debian-bookworm-slim.tar -> `docker import`
#   4. otherwise debootstrap (--variant=minbase bookworm) from the host's Debian
#      mirror into a temp rootfs, slim it, save the tarball (step 3 on later runs),
#      and `docker import` it.
#
# The rootfs is set up like Debian's official slim image: no docs/man pages/
# translations (also for packages installed later, via dpkg path-exclude), no apt
# lists, apt cleans up after itself, no service starts during builds
# (policy-rc.d), and apt sources on plain http:// (containers here cannot do
# https; apt verifies packages with Debian's signing keys anyway).
#
# Usage: scripts/build-base-image.sh [--force]   (--force: rebuild the tarball
#        with debootstrap and re-import, even if the image or tarball exists)
# Environment:
#   OPTASIA_HOME   bundle home (default /opt/optasia)
#   OPTASIA_CACHE  download/build cache (default $OPTASIA_HOME/cache)
#   BASE_IMAGE     tag to provide (default debian:bookworm-slim)
#   BASE_IMAGE_MIRROR  Debian mirror for debootstrap and the image's apt (default, or
#                  empty: the host's first bookworm mirror from /etc/apt, else
#                  http://deb.debian.org/debian); the image gets it as http://
#   BASE_IMAGE_SECURITY_MIRROR  (default: the host's, else http://deb.debian.org/debian-security)
#   BASE_IMAGE_PULL_TIMEOUT  seconds for the `docker pull` attempt (default 20; 0 skips pulling)
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
SUITE=bookworm
OPTASIA_HOME="${OPTASIA_HOME:-/opt/optasia}"
OPTASIA_CACHE="${OPTASIA_CACHE:-$OPTASIA_HOME/cache}"
TARBALL="$OPTASIA_CACHE/base/debian-$SUITE-slim.tar"
PULL_TIMEOUT="${BASE_IMAGE_PULL_TIMEOUT:-20}"
FORCE=0

say() { printf 'build-base-image: %s\n' "$*" >&2; }
die() {
    printf 'build-base-image: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf 'build-base-image:   %s\n' "$line" >&2; done
    exit 1
}

for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $arg" "run '$0 --help' for the options" ;;
    esac
done

command -v docker >/dev/null || die "docker CLI not found" "install Docker (Debian: apt-get install docker.io) and retry"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer ('docker info' failed)" \
    "start it (systemctl start docker, or: nohup dockerd >/tmp/dockerd.log 2>&1 &) and retry"

image_present() { docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; }

# --- the host's Debian mirror -------------------------------------------------
# First URI serving suite $SUITE (or $SUITE-security for $1=security) in the
# host's apt sources, one-line (.list) or deb822 (.sources) format.
host_mirror() {
    local want="$SUITE" f
    [ "${1:-}" = security ] && want="$SUITE-security"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v want="$want" '
            function out(u) { sub(/\/+$/, "", u); print u; found = 1; exit }
            # deb822 stanzas
            /^[[:space:]]*$/ { if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && enabled != "no" && suites_ok && uri != "") out(uri);
                               types = ""; uri = ""; suites_ok = 0; enabled = ""; next }
            /^Types:/   { types = $0; sub(/^Types:[[:space:]]*/, "", types); next }
            /^URIs:/    { uri = $2; next }
            /^Suites:/  { for (i = 2; i <= NF; i++) if ($i == want) suites_ok = 1; next }
            /^Enabled:/ { enabled = tolower($2); next }
            # one-line format: deb [opts] URI suite components
            /^[[:space:]]*deb[[:space:]]/ {
                i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) out($i)
            }
            END { if (!found && types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && enabled != "no" && suites_ok && uri != "") print uri }
        ' "$f" | head -n1
    done | head -n1
}

to_http() { printf '%s\n' "$1" | sed -E 's#^https://#http://#'; }

# --- 1. present? ----------------------------------------------------------------
if [ "$FORCE" = 0 ] && image_present; then
    say "$BASE_IMAGE is present ($(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" | cut -c1-19)); nothing to do"
    exit 0
fi

# --- 2. pull ------------------------------------------------------------------
if [ "$FORCE" = 0 ] && [ "$PULL_TIMEOUT" != 0 ] && [ ! -s "$TARBALL" ]; then
    say "trying 'docker pull $BASE_IMAGE' (at most ${PULL_TIMEOUT}s) ..."
    if timeout --kill-after=5 "$PULL_TIMEOUT" docker pull -q "$BASE_IMAGE" >/dev/null 2>&1 && image_present; then
        say "pulled $BASE_IMAGE"
        exit 0
    fi
    say "pull failed or timed out (no registry reachable?); building the base with debootstrap instead"
fi

import_tarball() {
    say "importing $TARBALL as $BASE_IMAGE ..."
    docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL optasia.base=debootstrap-$SUITE-minbase" \
        --message "debootstrap --variant=minbase $SUITE (scripts/build-base-image.sh)" \
        "$TARBALL" "$BASE_IMAGE" >/dev/null \
        || die "docker import of $TARBALL failed" \
               "the tarball may be damaged: delete it and rerun this script (it is rebuilt with debootstrap)"
    say "$BASE_IMAGE ready ($(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" | cut -c1-19), from $TARBALL)"
}

# --- 3. cached tarball ----------------------------------------------------------
if [ "$FORCE" = 0 ] && [ -s "$TARBALL" ]; then
    import_tarball
    exit 0
fi

# --- 4. debootstrap -----------------------------------------------------------
[ "$(id -u)" = 0 ] || die "debootstrap needs root" "rerun as root (sudo $0), or load a $BASE_IMAGE image from elsewhere (docker load)"
command -v debootstrap >/dev/null || die "debootstrap is not installed" "apt-get install debootstrap, then rerun"

MIRROR="${BASE_IMAGE_MIRROR:-$(host_mirror)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SEC_MIRROR="${BASE_IMAGE_SECURITY_MIRROR:-$(host_mirror security)}"
SEC_MIRROR="${SEC_MIRROR:-http://deb.debian.org/debian-security}"
IMAGE_MIRROR="$(to_http "$MIRROR")"
IMAGE_SEC_MIRROR="$(to_http "$SEC_MIRROR")"
ARCH="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$(dirname "$TARBALL")"
WORK="$(mktemp -d "$(dirname "$TARBALL")/.debootstrap.XXXXXX")"
ROOTFS="$WORK/rootfs"

cleanup() {
    local m
    # debootstrap mounts proc/sys inside the target; never rm -rf through a mount.
    if [ -d "$ROOTFS" ]; then
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v r="$ROOTFS" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r)
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "debootstrap --variant=minbase $SUITE ($ARCH) from $MIRROR into $ROOTFS (takes a few minutes) ..."
t0=$(date +%s)
keyring_opt=()
[ -r "$KEYRING" ] && keyring_opt=(--keyring="$KEYRING")
if ! debootstrap --variant=minbase --arch="$ARCH" "${keyring_opt[@]}" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 25 "$WORK/debootstrap.log" >&2 || true
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 25 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above)" \
        "check that $MIRROR is reachable from this host (apt-get update works?)," \
        "or set BASE_IMAGE_MIRROR=http://your-mirror/debian and rerun"
fi
say "debootstrap done in $(( $(date +%s) - t0 ))s; slimming the rootfs ..."

# apt sources inside the image: plain http (containers cannot do https here).
rm -f "$ROOTFS/etc/apt/sources.list"
mkdir -p "$ROOTFS/etc/apt/sources.list.d"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
# Written by scripts/build-base-image.sh. Plain http on purpose: apt checks
# every package against Debian's signing keys, and https may not work in containers.
Types: deb
URIs: $IMAGE_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $IMAGE_SEC_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# As in Debian's official slim images (debuerreotype): keep images small and quiet.
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d" "$ROOTFS/etc/apt/apt.conf.d"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Slim image: no docs, man pages, info pages or translations for packages
# installed later (copyright files stay). Written by build-base-image.sh.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes" <<'EOF'
Acquire::GzipIndexes "true";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'EOF'
Apt::AutoRemove::SuggestsImportant "false";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-retries" <<'EOF'
Acquire::Retries "3";
EOF
# No daemons start while packages are installed in a build.
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"

# Slim what debootstrap installed.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
       "$ROOTFS"/var/cache/apt/archives/partial/* "$ROOTFS"/var/cache/ldconfig/aux-cache \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/debootstrap \
       "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/groff/* \
       "$ROOTFS"/usr/share/lintian/* "$ROOTFS"/usr/share/linda/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
# Translations (only the C locale remains; /usr/lib/locale/C.utf8 stays: initdb needs it).
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
# Host-specific files a container gets from the engine anyway.
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
rm -f "$ROOTFS/etc/machine-id" "$ROOTFS/var/lib/dbus/machine-id"

say "writing $TARBALL ..."
tar --numeric-owner --xattrs -C "$ROOTFS" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
    -cf "$TARBALL.partial" . \
    || die "could not write the tarball $TARBALL" "check free space under $(dirname "$TARBALL")"
mv -f "$TARBALL.partial" "$TARBALL"
say "tarball: $(du -h "$TARBALL" | cut -f1) (cached: later runs import it without debootstrap)"

import_tarball
