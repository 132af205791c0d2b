#!/bin/busybox sh
# PID 1 of a uffdtrace test VM (busybox sh, from the initramfs that
# tests/vm/initramfs.py builds).  It turns the host's root, shared read-only
# over 9p, into a writable root with a tmpfs overlay, mounts what tracing
# needs, runs the job the host wrote to the shared job directory, and powers
# off.  Lines starting with "uffdtrace-vm:" on the console are read by the
# host (tests/vm/harness.py): keep their wording in step with it.
export PATH=/bin
mark() { echo "uffdtrace-vm: $*" > /dev/console; }
debug_shell() {           # "uffdtrace.shell" on the kernel command line (README)
    if grep -qw uffdtrace.shell /proc/cmdline; then
        echo "uffdtrace-vm debug shell ($1); exit to continue" > /dev/console
        setsid cttyhack sh
    fi
}
fail() {                  # deterministic failure: the host does not retry it
    mark "FAILED $stage: $*"
    debug_shell "failed: $*"
    poweroff -f
    sleep 10
}

/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
. /etc/uffdtrace-vm.conf            # RELEASE, MODULES_DIR, OVERLAY_SIZE
mark "init started on $(uname -r) after $(cut -d' ' -f1 /proc/uptime) s"

stage=mount
[ "$(uname -r)" = "$RELEASE" ] || fail "booted $(uname -r), expected $RELEASE"
# /modules/order lists each module after its dependencies (from modules.dep).
while read -r module; do
    insmod "/modules/$module" || fail "insmod $module"
done < /modules/order

mkdir -p /lower /rw /newroot
# cache=loose: the lower layer is a read-only view, so caching it is safe; it
# halves a small bcc compile under TCG (7.3 s vs 13.9 s with cache=none).
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
    || fail "mount the host root over 9p"
mount -t tmpfs -o "size=$OVERLAY_SIZE" tmpfs /rw || fail "mount tmpfs for the overlay"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fail "mount the overlay root"
mount -t proc proc /newroot/proc || fail "mount /proc"
mount -t sysfs sysfs /newroot/sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /newroot/dev || fail "mount /dev"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
# /tmp stays the overlay's (writable, and showing the host's /tmp): a clone
# checked out under the host's /tmp must be visible to the guest.
for dir in /run /dev/shm; do
    mount -t tmpfs tmpfs "/newroot$dir" || fail "mount tmpfs on $dir"
done
mount -t tracefs tracefs /newroot/sys/kernel/tracing || fail "mount tracefs"
mount -t debugfs debugfs /newroot/sys/kernel/debug || fail "mount debugfs"
mount -t bpf bpf /newroot/sys/fs/bpf || fail "mount bpffs"
# bcc looks for /lib/modules/$(uname -r)/{build,source}; the unpacked tree
# has both as relative links to its headers, and modules for modprobe.
rm -rf "/newroot/lib/modules/$RELEASE"
ln -s "$MODULES_DIR" "/newroot/lib/modules/$RELEASE" || fail "link /lib/modules/$RELEASE"
mkdir -p /newroot/run/uffdtrace-job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job /newroot/run/uffdtrace-job \
    || fail "mount the job directory over 9p"
[ -r /newroot/run/uffdtrace-job/run.sh ] || fail "no run.sh in the job directory"

debug_shell "root at /newroot; the job runs next"
stage=command
mark "command started after $(cut -d' ' -f1 /proc/uptime) s"
chroot /newroot /bin/sh /run/uffdtrace-job/run.sh > /newroot/run/uffdtrace-job/output 2>&1
status=$?
echo "$status" > /newroot/run/uffdtrace-job/status
sync
mark "command exited with status $status after $(cut -d' ' -f1 /proc/uptime) s"
poweroff -f
sleep 10
