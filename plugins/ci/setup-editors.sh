#!/usr/bin/env bash
# Installs what tests/test_plugin_krita.py and tests/test_plugin_gimp.py need (Debian 12, as root):
#   Krita 5 + PyQt5 + Xvfb from Debian's packages, and a cached Debian 13 (trixie) root with GIMP 3 and its
#   Python bindings (GIMP 3 is not in Debian 12). Idempotent: a second run only checks, in about a second.
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
if ((${#need[@]})); then
  echo "setup-editors.sh: installing Krita, PyQt5, Xvfb and debootstrap (missing: ${need[*]})"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q krita python3-pyqt5 xvfb xauth debootstrap >/dev/null
fi

if [[ ! -x $R/usr/bin/gimp-console-3.0 ]]; then
  echo "setup-editors.sh: building the GIMP 3 root at $R (about 2 minutes, 1 GB; cached afterwards)"
  rm -rf "$R.partial"
  mkdir -p "$(dirname "$R")"
  debootstrap --variant=minbase trixie "$R.partial" http://deb.debian.org/debian >/dev/null
  P=$R.partial
  mount -t proc proc "$P/proc"; mount --bind /dev "$P/dev"; mount -t sysfs sysfs "$P/sys"
  trap 'umount "$P/proc" "$P/dev" "$P/sys" 2>/dev/null || true' EXIT
  chroot "$P" apt-get update -q >/dev/null
  chroot "$P" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    gimp python3-gi gir1.2-gimp-3.0 >/dev/null
  chroot "$P" apt-get clean
  umount "$P/proc" "$P/dev" "$P/sys"; trap - EXIT
  mv "$P" "$R"  # only a complete root gets the final name, so an interrupted build is redone
fi
echo "setup-editors.sh: Krita $(dpkg-query -W -f='${Version}' krita), GIMP root at $R"
