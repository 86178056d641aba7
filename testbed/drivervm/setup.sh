#!/usr/bin/env bash
# Prepare the Paradice driver VM: a Debian bookworm kernel with in-tree virtual drivers (vivid, virtio-gpu,
# vgem, snd-dummy, snd-aloop, uinput, virtio-input, cuse), vkms built out of tree, plus a small busybox
# initramfs, booted by run.sh.
#
# Idempotent. Run as root on Debian bookworm:   bash testbed/drivervm/setup.sh
# Everything it fetches or builds lives in $DVM_CACHE (default <repo>/.cache/drivervm, ignored by git);
# a second run finds it all there and downloads and builds nothing.
#
# Knobs: DVM_CACHE=dir   DVM_KV=6.1.0-NN-amd64 (pin a kernel ABI; default: what linux-image-amd64 depends on,
#        remembered in $DVM_CACHE/kv after the first run)   DVM_REBUILD=1 (force a fresh initramfs)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${DVM_CACHE:-$REPO/.cache/drivervm}
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages with apt-get)"
command -v apt-get >/dev/null || die "needs Debian's apt-get"

# Modules loaded at boot, in this order. The order fixes device numbering: virtio-gpu is DRM card0, vgem
# card1 and vkms card2 (no render node); snd-dummy is ALSA card 0 and snd-aloop card 1. vivid is loaded with
# n_devs=1 (see guest/init.sh). Debian's 6.1 kernel is built without CONFIG_DRM_VKMS, so vkms is compiled
# below from linux-source against linux-headers-$KV (it gives KMS a real 60 Hz vblank; virtio-gpu has none).
# A guest VM (dvm.role=guest, see run.sh) loads only the first line: what any VM needs for its network,
# exec channel and shares; its devices come from the Paradice module (Kernel/paradice, built below).
PLAIN_MODULES="virtio_pci virtio_net virtio_console 9pnet_virtio 9p"
MODULES="$PLAIN_MODULES
virtio_input evdev uinput virtio-gpu vgem vkms vivid snd-dummy snd-aloop snd-seq-dummy cuse"
# Nodes /init waits for before it starts the backend.
EXPECT="/dev/video0 /dev/video3 /dev/vbi0 /dev/vbi1 /dev/radio0 /dev/radio1 /dev/swradio0 /dev/v4l-touch0 /dev/media0
/dev/dri/card0 /dev/dri/card1 /dev/dri/card2 /dev/dri/renderD128 /dev/snd/controlC0 /dev/snd/controlC1 /dev/snd/seq /dev/uinput /dev/cuse"

# --- host packages -------------------------------------------------------------------------------------
# emulator and initramfs tools, plus the real clients that tests run natively inside the VM (the guest sees
# the host's /usr over 9p, so installing them on the host is what makes them available in the guest)
PACKAGES="qemu-system-x86 busybox-static kmod cpio xz-utils v4l-utils evtest evemu-tools alsa-utils libdrm-tests drm-info"
updated=0
apt_update_once() { [ $updated = 1 ] || { log "apt-get update"; apt-get update -qq; updated=1; }; }

# Installs those of the named packages that are not installed yet.
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  apt_update_once
  log "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
# shellcheck disable=SC2086   # a word list
install_missing $PACKAGES

# --- kernel (downloaded and unpacked, never installed on the host) -------------------------------------
mkdir -p "$CACHE/debs"
KV=${DVM_KV:-$(cat "$CACHE/kv" 2>/dev/null || true)}
if [ -z "$KV" ]; then
  resolve() { apt-cache depends linux-image-amd64 2>/dev/null |
              awk '/Depends: linux-image-[0-9]/ { sub("linux-image-", "", $2); print $2; exit }'; }
  KV=$(resolve || true)
  [ -n "$KV" ] || { apt_update_once; KV=$(resolve); }
  [ -n "$KV" ] || die "cannot tell which kernel linux-image-amd64 depends on"
fi
case "$KV" in 6.1.0-*-amd64) ;; *) log "warning: kernel $KV is not the expected 6.1.0-*-amd64 series" ;; esac
echo "$KV" > "$CACHE/kv"

shopt -s nullglob
debs=("$CACHE"/debs/linux-image-"$KV"_*.deb)
if ((${#debs[@]} == 0)); then
  log "downloading linux-image-$KV"
  # apt-get download writes into the current directory; the _apt sandbox user must be able to write there
  (cd "$CACHE/debs" && { apt-get download -q "linux-image-$KV" 2>/dev/null ||
                         { apt_update_once; apt-get download -q "linux-image-$KV"; }; })
  debs=("$CACHE"/debs/linux-image-"$KV"_*.deb)
  ((${#debs[@]})) || die "apt-get download linux-image-$KV produced no .deb"
fi
deb=${debs[0]}

# --- vkms, built out of tree (once per kernel ABI) --------------------------------------------------------
# Sources: drivers/gpu/drm/vkms from linux-source-6.1 of the image's version; build: linux-headers-$KV
# (installed on the host, with linux-kbuild-6.1 and gcc-12) and make. The module must carry the VM
# kernel's vermagic.
VKMS=$CACHE/vkms-$KV.ko
if [ ! -f "$VKMS" ]; then
  kver=$(dpkg-deb -f "$deb" Version)
  install_missing "linux-headers-$KV" make
  VW=$CACHE/vkms-build
  rm -rf "$VW"; mkdir -p "$VW"; chmod 755 "$VW"    # apt-get download's _apt user writes here
  log "downloading linux-source-6.1 $kver (for vkms)"
  fetch_source() { (cd "$VW" && apt-get download -q "$1" >/dev/null 2>&1); }
  fetch_source "linux-source-6.1=$kver" || { apt_update_once; fetch_source "linux-source-6.1=$kver"; } ||
    { log "linux-source-6.1 $kver is no longer on the mirror; taking its current version"
      fetch_source linux-source-6.1; } || die "apt-get download linux-source-6.1 failed"
  src=("$VW"/linux-source-6.1_*.deb)
  ((${#src[@]})) || die "apt-get download linux-source-6.1 produced no .deb"
  log "building vkms.ko against linux-headers-$KV"
  dpkg-deb --fsys-tarfile "${src[0]}" | tar -x -O --wildcards '*/linux-source-6.1.tar.xz' | xz -dc |
    tar -x -C "$VW" --strip-components=5 --wildcards 'linux-source-6.1/drivers/gpu/drm/vkms/*'
  rm -f "${src[0]}"
  make -C "/lib/modules/$KV/build" M="$VW" CONFIG_DRM_VKMS=m -j"$(nproc)" modules > "$VW/build.log" 2>&1 ||
    { tail -n 20 "$VW/build.log" >&2; die "vkms build failed (log: $VW/build.log)"; }
  magic=$(modinfo -F vermagic "$VW/vkms.ko")
  case "$magic" in "$KV "*) ;; *) die "vkms.ko has vermagic '$magic', not $KV" ;; esac
  strip --strip-debug -o "$VKMS" "$VW/vkms.ko"      # as INSTALL_MOD_STRIP does: 2 MB -> 62 KB
  rm -rf "$VW"
fi

# --- the Paradice module for guest VMs (Kernel/paradice), cached by a hash of its sources ---------------------
# It goes into a guest VM's share folder on each boot (run.sh), not into the initramfs.
if [ -x "$REPO/Kernel/paradice/build.sh" ]; then
  install_missing "linux-headers-$KV" make
  log "paradice module: $("$HERE/paradice-module.sh" "$KV")"
else
  log "no Kernel/paradice in this tree: guest VMs will have no Paradice module"
fi

VMLINUX=$CACHE/vmlinux-$KV
INITRD=$CACHE/initramfs.cpio
STAMP=$CACHE/initramfs.stamp
# The initramfs is rebuilt when anything that goes into it changes.
want=$( { echo "v1 $KV $(basename "$deb") $(sha256sum < "$VKMS")"; echo "$MODULES"; echo "$EXPECT"; cat "$HERE/guest/init.sh" "$HERE/guest/hostrun.sh";
          dpkg-query -W -f='${Version}' busybox-static; } | sha256sum | cut -d' ' -f1)
if [ "${DVM_REBUILD:-0}" != 1 ] && [ -f "$VMLINUX" ] && [ -f "$INITRD" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  log "up to date: kernel $KV, $INITRD ($(du -h "$INITRD" | cut -f1))"
  exit 0
fi

t0=$(date +%s)
WORK=$CACHE/build
rm -rf "$WORK"; mkdir -p "$WORK"
# The unpacked package is 400 MB; it lives only while we build and is removed at the end.
KPKG=$WORK/kpkg
log "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$KPKG"
MODDIR=$KPKG/lib/modules/$KV
# vkms joins the tree, so that the closure below finds it and its dependencies (drm_shmem_helper, ...);
# the .deb ships no modules.dep anyway (its postinst makes it)
install -D -m 644 "$VKMS" "$MODDIR/updates/vkms.ko"
depmod -b "$KPKG" "$KV"

# QEMU can boot an uncompressed ELF vmlinux through its PVH entry point (CONFIG_PVH=y in Debian's kernel).
# That skips real-mode setup and the xz decompression of the bzImage, which are slow under TCG (~4 s).
if [ ! -f "$VMLINUX" ]; then
  log "extracting vmlinux for PVH boot"
  python3 - "$KPKG/boot/vmlinuz-$KV" "$VMLINUX.tmp" <<'PY'
import lzma, sys
blob = open(sys.argv[1], "rb").read()
start = blob.find(b"\xfd7zXZ\x00")          # the xz stream embedded in the bzImage
if start < 0:
    sys.exit("no xz payload in " + sys.argv[1])
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob[start:])
if elf[:4] != b"\x7fELF":
    sys.exit("payload is not an ELF vmlinux")
open(sys.argv[2], "wb").write(elf)
PY
  mv "$VMLINUX.tmp" "$VMLINUX"
fi

# --- initramfs root -------------------------------------------------------------------------------------
R=$WORK/root
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,host,share,lib/modules/"$KV"}
cp /bin/busybox "$R/bin/busybox"
for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"; done
# the kernel may call /sbin/modprobe (request_module) and /sbin/init
ln -sf ../bin/busybox "$R/sbin/modprobe"

# module closure: every module plus its dependencies, as kmod resolves them against the unpacked tree
for m in $MODULES; do
  modprobe -d "$KPKG" -S "$KV" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }' | grep . ||
    die "module $m is not in linux-image-$KV"
done | sort -u | while read -r ko; do
  rel=${ko#"$MODDIR"/}
  mkdir -p "$R/lib/modules/$KV/$(dirname "$rel")"
  cp "$ko" "$R/lib/modules/$KV/$rel"
done
cp "$MODDIR"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KV/"
depmod -b "$R" "$KV"
nmods=$(find "$R/lib/modules" -name '*.ko' | wc -l)

echo "$MODULES" | tr '\n' ' ' > "$R/etc/dvm-modules"
echo "$PLAIN_MODULES" > "$R/etc/dvm-modules-guest"
echo "$EXPECT" | tr '\n' ' ' > "$R/etc/dvm-expect"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\naudio:x:29:\nvideo:x:44:\ninput:x:101:\n' > "$R/etc/group"
install -m 755 "$HERE/guest/init.sh" "$R/init"
install -m 755 "$HERE/guest/hostrun.sh" "$R/bin/hostrun"

# Uncompressed on purpose: unpacking a gzip initramfs costs about 5 s under TCG.
(cd "$R" && find . | cpio -o -H newc --quiet) > "$INITRD.tmp"
mv "$INITRD.tmp" "$INITRD"
echo "$want" > "$STAMP"
rm -rf "$WORK"
log "built $INITRD ($(du -h "$INITRD" | cut -f1), $nmods modules) and $(basename "$VMLINUX") in $(( $(date +%s) - t0 )) s"
