#!/bin/bash
# On the GPU machine (OUT: a folder for logs): the CUDA benchmarks, the LeNet step, then the
# whole suite on cuda, webgpu and opencl side by side; under 10 minutes on an H200.
cd "$(dirname "$0")/../.."
source benchmarks/gpu/setup_device.sh >/dev/null 2>&1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
git log --oneline 2>/dev/null | head -1
timeout 140 python3 benchmarks/bench_cuda.py $OUT/cuda.json > $OUT/cuda.log 2>&1; echo "bench_cuda rc=$?"
grep -E '^(matmul|elementwise)' $OUT/cuda.log | cut -c1-400
timeout 80 python3 benchmarks/bench_cuda_train.py $OUT/train.json > $OUT/train.log 2>&1; echo "train rc=$?"
tail -6 $OUT/train.log | cut -c1-300
for b in cuda webgpu opencl; do
  POLYJIT_CACHE=/tmp/pjc_$b POLYJIT_TEST_BACKENDS=$b timeout 320 python3 -m pytest -o addopts="-q -p no:cacheprovider" \
    -n 5 --ignore=tests/test_onnx_node_suite.py -rfE > $OUT/t_$b.log 2>&1 &
done
wait
for b in cuda webgpu opencl; do echo "== $b"; grep -E "^(FAILED|ERROR)" $OUT/t_$b.log | cut -c1-300 | head -20; tail -1 $OUT/t_$b.log; done
