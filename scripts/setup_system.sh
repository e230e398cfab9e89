#!/usr/bin/env bash
# System packages robobench needs: ffmpeg (mediapy, video), OSMesa/EGL (headless MuJoCo),
# Vulkan loader + Mesa >= 25 lavapipe (ManiSkill/SAPIEN on a CPU-only machine), headless Chromium +
# chromedriver (tests/test_browser.py drives JupyterLab through Selenium).
# Idempotent: does nothing when everything is present. Not root: prints the commands instead.
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
ldconfig -p | grep -q 'libOSMesa.so' || need+=(libosmesa6)
ldconfig -p | grep -q 'libEGL.so.1' || need+=(libegl1)
ldconfig -p | grep -q 'libvulkan.so.1' || need+=(libvulkan1)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

# SAPIEN rejects Debian 12's Mesa 22 lavapipe; Mesa >= 25 (bookworm-backports) works.
mesa_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 25
}
is_bookworm=0
if [ -r /etc/os-release ] && grep -q 'VERSION_CODENAME=bookworm' /etc/os-release; then is_bookworm=1; fi
mesa_needed=0
if command -v dpkg-query >/dev/null 2>&1; then
  if [ "$is_bookworm" = 1 ]; then mesa_ok || mesa_needed=1
  else dpkg-query -W mesa-vulkan-drivers >/dev/null 2>&1 || mesa_needed=1; fi
fi

if [ ${#need[@]} -eq 0 ] && [ "$mesa_needed" = 0 ]; then
  echo "system packages: ok"
  exit 0
fi

backports_file=/etc/apt/sources.list.d/robobench-backports.sources
# The mirror this machine already uses (never a hard-coded host).
mirror() {
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
    grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } \
    | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true
}

if [ "$(id -u)" != 0 ]; then
  echo "robobench needs system packages; run as root:" >&2
  echo "  apt-get update && apt-get install -y ${need[*]:-}" >&2
  if [ "$mesa_needed" = 1 ]; then
    echo "  # Mesa >= 25 Vulkan (lavapipe) for ManiSkill on CPU, from bookworm-backports:" >&2
    echo "  printf 'Types: deb\nURIs: <your debian mirror>\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > $backports_file" >&2
    echo "  apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1" >&2
  fi
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [ "$mesa_needed" = 1 ] && [ "$is_bookworm" = 1 ] && [ ! -f "$backports_file" ]; then
  m=$(mirror)
  if [ -z "$m" ]; then echo "no Debian mirror found in apt sources; cannot add bookworm-backports" >&2; exit 1; fi
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$m" > "$backports_file"
  echo "added bookworm-backports from $m"
fi
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then apt-get install -y -qq --no-install-recommends "${need[@]}"; fi
if [ "$mesa_needed" = 1 ]; then
  if [ "$is_bookworm" = 1 ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1
  else
    apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
  fi
fi
echo "system packages: installed"
