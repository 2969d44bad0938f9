#!/bin/bash
# On a machine with network: the files the GPU machine (no network, Python 3.12) needs,
# carried beside the checkout: .whl (wheels) and .gl (Vulkan loader / GL debs).
set -e
cd "$(dirname "$0")/../.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl pyopencl pytools platformdirs siphash24 wgpu rendercanvas \
  cffi pycparser hypothesis sortedcontainers pytest-benchmark py-cpuinfo pytest-xdist execnet gguf tqdm
mkdir -p .gl /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update >/dev/null
(cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
