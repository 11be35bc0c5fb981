#!/usr/bin/env bash
# Installs what tests/test_plugin_krita.py and tests/test_plugin_gimp.py need (Debian 12, as root):
#   Krita 5 + PyQt5 + Xvfb from Debian's packages, and a cached Debian 13 (trixie) root with GIMP 3, its
#   Python bindings and xdotool (GIMP 3 is not in Debian 12; the GIMP test drives its window under the host's
#   Xvfb). Idempotent: a second run only checks, in about a second.
# Also the emoji font (fonts-noto-color-emoji): its face emoji are the set generator's test and benchmark
# icons (tests/test_sagan.py, bench/emoji.py).
# The GIMP root lives outside the repository, in $SINGAN_GIMP_ROOT (default /var/cache/singan-editors/gimp-root).
set -euo pipefail
R=${SINGAN_GIMP_ROOT:-/var/cache/singan-editors/gimp-root}

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-editors.sh: needs root (apt-get, debootstrap, chroot); the editor tests will be skipped" >&2
  exit 1
fi

need=()
for cmd in krita kritarunner xvfb-run xauth debootstrap; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
/usr/bin/python3 -c 'import PyQt5' 2>/dev/null || need+=(python3-pyqt5)
[[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]] || need+=(fonts-noto-color-emoji)
if ((${#need[@]})); then
  echo "setup-editors.sh: installing Krita, PyQt5, Xvfb, debootstrap and the emoji font (missing: ${need[*]})"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q krita python3-pyqt5 xvfb xauth debootstrap \
    fonts-noto-color-emoji >/dev/null
fi

in_root() {  # runs apt-get inside a GIMP root, with proc, dev and sys mounted meanwhile
  local root=$1; shift
  mount -t proc proc "$root/proc"; mount --bind /dev "$root/dev"; mount -t sysfs sysfs "$root/sys"
  trap "umount '$root/proc' '$root/dev' '$root/sys' 2>/dev/null || true" EXIT
  chroot "$root" apt-get update -q >/dev/null
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
  chroot "$root" apt-get clean
  umount "$root/proc" "$root/dev" "$root/sys"; trap - EXIT
}

if [[ ! -x $R/usr/bin/gimp-console-3.0 ]]; then
  echo "setup-editors.sh: building the GIMP 3 root at $R (about 2 minutes, 1 GB; cached afterwards)"
  rm -rf "$R.partial"
  mkdir -p "$(dirname "$R")"
  debootstrap --variant=minbase trixie "$R.partial" http://deb.debian.org/debian >/dev/null
  in_root "$R.partial" gimp python3-gi gir1.2-gimp-3.0 xdotool
  mv "$R.partial" "$R"  # only a complete root gets the final name, so an interrupted build is redone
elif [[ ! -x $R/usr/bin/xdotool ]]; then
  echo "setup-editors.sh: adding xdotool to the GIMP root at $R"
  in_root "$R" xdotool
fi
echo "setup-editors.sh: Krita $(dpkg-query -W -f='${Version}' krita), GIMP root at $R"
