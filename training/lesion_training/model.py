"""MobileNetV2 in torch (training) and its TF rebuild (export); normalisation inside the network."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torchvision

from .paths import CLASSES, WEIGHTS_PTH

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)
# x_norm = x_raw * NORM_MUL + NORM_ADD  (x_raw: 0..255 pixels)
NORM_MUL = (1.0 / (255.0 * STD)).astype(np.float32)
NORM_ADD = (-MEAN / STD).astype(np.float32)


def build_mobilenet_v2(pretrained: bool = True, num_classes: int = len(CLASSES), dropout: float = 0.2) -> nn.Module:
    m = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        sd = torch.load(WEIGHTS_PTH, map_location="cpu", weights_only=True)
        m.load_state_dict(sd)
    m.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
    nn.init.normal_(m.classifier[1].weight, 0, 0.01)
    nn.init.zeros_(m.classifier[1].bias)
    return m


class RawNHWC(nn.Module):
    """Wraps a NCHW MobileNetV2: input float NHWC raw 0..255 pixels, output logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mul", torch.tensor(NORM_MUL).view(1, 3, 1, 1))
        self.register_buffer("add", torch.tensor(NORM_ADD).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = x * self.mul + self.add
        return self.net(x)


def normalize_nchw(x_uint8_nchw: torch.Tensor) -> torch.Tensor:
    mul = torch.tensor(NORM_MUL).view(1, 3, 1, 1)
    add = torch.tensor(NORM_ADD).view(1, 3, 1, 1)
    return x_uint8_nchw.float() * mul + add


# ---------------------------------------------------------------- folding torch -> list of layers
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    w = conv.weight.detach().double()
    g = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    wf = w * g.view(-1, 1, 1, 1)
    bf = bn.bias.detach().double() - bn.running_mean.detach().double() * g
    return wf.numpy(), bf.numpy()


def _cna(seq, relu: bool):
    conv, bn = seq[0], seq[1]
    w, b = _fold(conv, bn)
    return {
        "w": w, "b": b, "stride": conv.stride[0], "groups": conv.groups,
        "k": conv.kernel_size[0], "relu6": relu,
    }


def fold_layers(net: nn.Module) -> dict:
    """Flatten a torchvision MobileNetV2 into folded conv specs grouped into blocks."""
    blocks = []
    for i, f in enumerate(net.features):
        if i == 0 or i == len(net.features) - 1:
            blocks.append({"res": False, "layers": [_cna(f, True)]})
            continue
        seq = list(f.conv)
        layers = []
        j = 0
        while j < len(seq):
            m = seq[j]
            if isinstance(m, nn.Conv2d):  # pw-linear + BN
                layers.append(_cna([m, seq[j + 1]], False))
                j += 2
            else:  # Conv2dNormActivation
                layers.append(_cna(m, True))
                j += 1
        blocks.append({"res": bool(f.use_res_connect), "layers": layers})
    lin = net.classifier[-1]
    return {
        "blocks": blocks,
        "fc_w": lin.weight.detach().double().numpy(),
        "fc_b": lin.bias.detach().double().numpy(),
    }


# ---------------------------------------------------------------- TF rebuild
def tf_forward_fn(folded: dict):
    """Returns a python function (tf graph code) input float NHWC raw pixels -> logits."""
    import tensorflow as tf

    consts = []
    for blk in folded["blocks"]:
        cl = []
        for L in blk["layers"]:
            w = L["w"]
            if L["groups"] > 1:  # depthwise: torch [C,1,kh,kw] -> [kh,kw,C,1]
                wt = np.transpose(w, (2, 3, 0, 1)).astype(np.float32)
            else:  # torch [O,I,kh,kw] -> [kh,kw,I,O]
                wt = np.transpose(w, (2, 3, 1, 0)).astype(np.float32)
            cl.append((tf.constant(wt), tf.constant(L["b"].astype(np.float32)), L))
        consts.append((blk["res"], cl))
    fc_w = tf.constant(folded["fc_w"].T.astype(np.float32))
    fc_b = tf.constant(folded["fc_b"].astype(np.float32))
    mul = tf.constant(NORM_MUL.reshape(1, 1, 1, 3))
    add = tf.constant(NORM_ADD.reshape(1, 1, 1, 3))

    def conv(x, wt, b, L):
        if L["k"] == 3:
            if L["stride"] == 2:
                x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])  # PyTorch symmetric padding
                pad = "VALID"
            else:
                pad = "SAME"  # k3 s1: SAME == symmetric pad 1
        else:
            pad = "VALID"
        s = [1, L["stride"], L["stride"], 1]
        if L["groups"] > 1:
            y = tf.nn.depthwise_conv2d(x, wt, strides=s, padding=pad)
        else:
            y = tf.nn.conv2d(x, wt, strides=s, padding=pad)
        y = tf.nn.bias_add(y, b)
        return tf.nn.relu6(y) if L["relu6"] else y

    def fwd(x):
        x = x * mul + add
        for res, cl in consts:
            inp = x
            for wt, b, L in cl:
                x = conv(x, wt, b, L)
            if res:
                x = x + inp
        x = tf.reduce_mean(x, axis=[1, 2])
        return tf.matmul(x, fc_w) + fc_b

    return fwd
