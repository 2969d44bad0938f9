# Sourced on the GPU machine from the checkout: the carried wheels on PYTHONPATH, the Vulkan
# loader unpacked, NVIDIA's Vulkan and OpenCL drivers named in ICD files.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
for f in .gl/*.deb; do dpkg -x $f / ; done; ldconfig
for j in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
  [ -f $j ] && export VK_DRIVER_FILES=$j && break; done
# NVIDIA's OpenCL: the driver library may be there without an ICD file naming it
mkdir -p /tmp/ocl
lib=$(ls /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib64/libnvidia-opencl.so.1 2>/dev/null | head -1)
[ -z "$lib" ] && lib=$(find / -xdev -name 'libnvidia-opencl.so*' 2>/dev/null | head -1)
if [ -n "$lib" ]; then echo "$lib" > /tmp/ocl/nvidia.icd; cp /etc/OpenCL/vendors/*.icd /tmp/ocl/ 2>/dev/null; export OCL_ICD_VENDORS=/tmp/ocl; fi
export PYTHONUNBUFFERED=1 POLYJIT_CACHE=/tmp/pjc
