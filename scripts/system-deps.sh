#!/usr/bin/env bash
# Debian packages rigd's tests and demo use: Icarus Verilog (cocotb runs), Debian's PoCL 3.1
# (an OpenCL CPU device several times faster than PyPI's PoCL for vector code), gcc (the NVML
# simulator), g++ and make (Verilator's C++ models), openssl (test certificates). Installed
# only when missing; skipped with a note where apt or root is not available.
set -euo pipefail
packages=(iverilog pocl-opencl-icd ocl-icd-libopencl1 gcc g++ make openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]}; install them with apt-get as root" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
