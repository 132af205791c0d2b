#!/usr/bin/env bash
# Set up everything uffdtrace needs on a Debian 12 (bookworm) machine, as root.
# Idempotent: a second run only checks, and finishes in a few seconds.
#
#   1. apt packages (bcc from Debian's python3-bpfcc, compilers, venv, and
#      Debian's prometheus for the `serve` tests: its service is not left on)
#   2. kernel headers for bcc: this kernel's own package when Debian has one;
#      otherwise Debian's 6.12 headers from bookworm-backports, *unpacked*
#      (not installed) under /var/cache/uffdtrace and linked as
#      /lib/modules/$(uname -r)/{build,source}.  They are enough for the
#      tracepoint tier; `uffdtrace doctor` reports them as a fallback.
#   3. tracefs mounted at /sys/kernel/tracing
#   4. .venv on Debian's python3 with --system-site-packages (so `import bcc`
#      works), the project installed editable: this builds native/ with cffi.
#   5. the vm tier's Debian kernels (tests/vm/kernels.py): downloaded from the
#      signed Debian indexes, unpacked (not installed) under
#      /var/cache/uffdtrace/vm, with their initramfs, so `make test` does not
#      download.  A failure here is only reported: the vm tier then says why.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
CACHE=/var/cache/uffdtrace
RELEASE=$(uname -r)
APT_PACKAGES=(python3-bpfcc python3-venv python3-dev gcc make libc6-dev
              linux-libc-dev zstd xz-utils ca-certificates tmux
              qemu-system-x86 busybox-static kmod cpio gpgv debian-archive-keyring
              python3-apt   # tests/vm: dpkg's version order (apt_pkg)
              bpftrace     # bench/: the one-liner uffdtrace is compared with
              prometheus)  # tests/live/test_serve.py: a real server scrapes `serve` (+ promtool)
FALLBACK_SUITE=bookworm-backports

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt, kernel headers and tracefs need it)"
command -v apt-get >/dev/null || die "this script supports Debian/Ubuntu (apt) only"
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -q >/dev/null
        apt_updated=1
    fi
}

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || printf '%s\n' "$p"
    done
}

install_apt_packages() {
    local missing
    missing=$(missing_packages "${APT_PACKAGES[@]}")
    if [ -n "$missing" ]; then
        apt_update
        log "installing: $(echo $missing)"
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing >/dev/null
        if printf '%s\n' $missing | grep -qx prometheus; then
            stop_system_prometheus
        fi
    fi
}

# Debian's package starts a Prometheus server on :9090 under systemd.  The
# tests start their own (own port, config and storage), so the one we just
# installed is stopped and disabled rather than left running.
stop_system_prometheus() {
    if [ -d /run/systemd/system ]; then
        log "stopping and disabling the prometheus service the package started"
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
}

ensure_backports_source() {
    if ! grep -rqs "$FALLBACK_SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding the $FALLBACK_SUITE apt source (used only to download headers)"
        cat > /etc/apt/sources.list.d/uffdtrace-backports.sources <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $FALLBACK_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt_updated=0
    fi
}

# Download .debs (never install them) and unpack them into one tree.
unpack_debs() {
    local dest=$1; shift
    local tmp
    tmp=$(mktemp -d)
    chown _apt "$tmp" 2>/dev/null || true  # apt downloads as _apt
    (cd "$tmp" && apt-get download -q "$@" >/dev/null)
    mkdir -p "$dest.partial"
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dest.partial"; done
    rm -rf "$tmp" "$dest"
    mv "$dest.partial" "$dest"
}

link_headers() {  # build-dir source-dir
    mkdir -p "/lib/modules/$RELEASE"
    ln -sfn "$1" "/lib/modules/$RELEASE/build"
    ln -sfn "$2" "/lib/modules/$RELEASE/source"
}

headers_usable() {  # a tree bcc can compile against is already linked
    local build="/lib/modules/$RELEASE/build"
    [ -e "$build/include/generated/utsrelease.h" ] || [ -e "$build/include/config/kernel.release" ]
}

install_headers() {
    headers_usable && return 0
    apt_update
    if apt-cache show "linux-headers-$RELEASE" >/dev/null 2>&1; then
        log "installing linux-headers-$RELEASE"
        apt-get install -y -q --no-install-recommends "linux-headers-$RELEASE" >/dev/null
        return 0
    fi
    ensure_backports_source
    apt_update
    # linux-headers-amd64 in backports depends on exactly one versioned set.
    local flavour ver
    flavour=$(apt-cache depends -t "$FALLBACK_SUITE" linux-headers-amd64 2>/dev/null \
              | awk '/Depends: linux-headers-[0-9]/ {print $2; exit}')
    [ -n "$flavour" ] || die "no linux-headers-amd64 in $FALLBACK_SUITE to fall back on"
    ver=${flavour#linux-headers-}; ver=${ver%-amd64}
    local dest="$CACHE/headers/$ver"
    if [ ! -d "$dest" ]; then
        log "no headers for kernel $RELEASE in Debian; unpacking $flavour as a fallback"
        unpack_debs "$dest" "$flavour" "linux-headers-$ver-common" "linux-kbuild-$ver"
    fi
    link_headers "$dest/usr/src/linux-headers-$ver-amd64" "$dest/usr/src/linux-headers-$ver-common"
    log "bcc will use fallback headers $ver (tracepoint tier; see uffdtrace doctor)"
}

mount_tracefs() {
    if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
        log "mounting tracefs at /sys/kernel/tracing"
        mount -t tracefs nodev /sys/kernel/tracing || log "could not mount tracefs"
    fi
}

stamp_of_sources() {
    cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT"/native/* "$ROOT"/bpf/*.h \
        | sha256sum | cut -d' ' -f1
}

build_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV (Debian python3, --system-site-packages for bcc)"
        /usr/bin/python3 -m venv --system-site-packages "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    local stamp
    stamp=$(stamp_of_sources)
    if [ "$(cat "$VENV/.uffdtrace-stamp" 2>/dev/null)" != "$stamp" ] \
       || ! "$VENV/bin/python" -c 'import uffdtrace._native' 2>/dev/null; then
        log "installing uffdtrace into $VENV (builds native/ with cffi)"
        "$VENV/bin/pip" install -q -e "$ROOT[test]"
        echo "$stamp" > "$VENV/.uffdtrace-stamp"
    fi
    "$VENV/bin/python" -c 'import bcc' 2>/dev/null \
        || die "bcc is not importable from $VENV (python3-bpfcc missing?)"
}

prefetch_vm_kernels() {
    (cd "$ROOT" && "$VENV/bin/python" -m tests.vm prefetch) \
        || log "vm tier kernels not prefetched (see above); the vm tier will retry or skip with the reason"
}

install_apt_packages
install_headers
mount_tracefs
build_venv
prefetch_vm_kernels
log "ready: $VENV/bin/uffdtrace"
