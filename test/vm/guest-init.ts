/**
 * The guest's /init (busybox sh) and its modprobe helper. Part of the
 * initramfs cache key: edit either and the next boot rebuilds the image.
 *
 * The guest sees the host's whole root read-only over 9p, with a tmpfs
 * overlay on top so it can write anywhere without touching the host, and
 * chroots into that: the checkout, node and cryptsetup are at the same paths
 * as on the host. Nothing is mounted over host paths except the pseudo
 * filesystems and /run; /scratch is a fresh tmpfs for loop-device backing
 * files (measured: luksFormat on a file in guest tmpfs ~1.5 s, on a 9p share
 * 3.5-12 s).
 *
 * What to run comes from the kernel command line (portcullis.script=PATH, a
 * host file seen through the overlay), so the image stays the same across
 * runs and is cached.
 *
 * The systemd mode (portcullis.upper=DEV, test/vm/systemd-vm.ts): the
 * overlay's upper layer is the ext4 file system on DEV (a virtio disk whose
 * image file outlives the guest, so a second boot sees the first one's
 * writes), the script prepares that root in a chroot (units, masks), and init
 * then hands PID 1 to the host's systemd with switch_root. The kernel's module
 * requests then go to /sbin/modprobe in that root, as on any host.
 */
export const GUEST_SCRATCH = '/scratch';
/** Printed by init when the guest cannot get ready; the host shows the line. */
export const GUEST_FAIL_MARK = 'PORTCULLIS-VM-FAIL';

export const GUEST_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
fail() { echo "${GUEST_FAIL_MARK} $*"; sync; reboot -f; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Dependency order comes from the file names (NN-name.ko), set by the builder.
for m in /modules/*.ko; do insmod "$m" || fail "insmod $m"; done
script=
upper=
for w in $(cat /proc/cmdline); do
  case "$w" in
    portcullis.script=*) script="\${w#portcullis.script=}" ;;
    portcullis.upper=*) upper="\${w#portcullis.upper=}" ;;
  esac
done
# msize: 9p's default 8 KiB messages make every file read many round trips.
# cache=loose: page-cache readahead instead of one round trip per page fault
# (cold \`node -e 1\` 1.4 s instead of 2.1-2.4 s). The guest's view of host
# files is then the one at first read: exchange data through the channel.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "mount 9p hostroot"
if [ -n "$upper" ]; then
  mount -t ext4 "$upper" /upper || fail "mount ext4 $upper"
else
  mount -t tmpfs -o mode=0755 upper /upper || fail "mount tmpfs upper"
fi
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || fail "mount overlay"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot${GUEST_SCRATCH}
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs shm /newroot/dev/shm
mount -t tmpfs run /newroot/run
mount -t tmpfs -o mode=1777 scratch /newroot${GUEST_SCRATCH}
# Load what dm-crypt and cryptsetup use up front, in one modprobe each. Meanwhile
# the kernel's own module requests get "no" at once (empty helper path): loading
# aesni_intel makes it ask for some 20 crypto-* aliases, each of which cost a
# modprobe of 0.3-0.8 s under TCG (measured: first plain open 14 s instead of 1.3 s).
echo > /proc/sys/kernel/modprobe
# Under systemd, dm_mod, dm_crypt and loop are left to the system (modprobe@.service, udev, losetup).
[ -n "$upper" ] || chroot /newroot /sbin/modprobe -a dm_mod dm_crypt loop || fail "modprobe dm_mod dm_crypt loop"
chroot /newroot /sbin/modprobe -a -q xts ecb cbc essiv cryptd crypto_simd aesni_intel sha256_ssse3 af_alg algif_skcipher algif_hash
# Anything else the kernel asks for later goes to the host's modprobe in the
# chroot (the helper runs in the initramfs root, hence the wrapper).
echo /sbin/chroot-modprobe > /proc/sys/kernel/modprobe
[ -n "$script" ] || fail "no portcullis.script= on the kernel command line"
[ -f "/newroot$script" ] || fail "run script $script not found in the guest"
if [ -n "$upper" ]; then
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot /newroot /bin/sh "$script" || fail "prepare script $script"
  echo /sbin/modprobe > /proc/sys/kernel/modprobe
  # switch_root empties the initramfs (not /lower, /upper: other file systems) and execs init as PID 1.
  exec env -i TERM=vt220 switch_root /newroot /sbin/init
fi
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb \\
  chroot /newroot /bin/sh "$script"
sync
reboot -f
`;

export const GUEST_MODPROBE = `#!/bin/busybox sh
exec /bin/chroot /newroot /sbin/modprobe "$@"
`;
