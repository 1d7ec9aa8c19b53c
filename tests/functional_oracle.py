"""An independent oracle: ResNetArcFace's eval-mode forward written with torch.nn.functional only.

It reads nothing but a state_dict, so it shares no code with the package: if the package's
arithmetic drifts from the reference's (a padding, a stride on the wrong conv, SE after the
addition, a second PReLU, a missing residual), the two disagree. The formulas follow
GFPGAN's arcface_arch.py, as the fidelity contract in CONTRIBUTING.md states them.
"""
import torch
import torch.nn.functional as F


def bn(sd, prefix, x):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=False, eps=1e-5)


def conv(sd, name, x, stride=1, padding=1):
    return F.conv2d(x, sd[f"{name}.weight"], stride=stride, padding=padding)


def se(sd, prefix, x):
    y = x.mean(dim=(2, 3))  # squeeze: (N, C)
    y = F.linear(y, sd[f"{prefix}.fc.0.weight"], sd[f"{prefix}.fc.0.bias"])
    y = F.prelu(y, sd[f"{prefix}.fc.1.weight"])
    y = torch.sigmoid(F.linear(y, sd[f"{prefix}.fc.2.weight"], sd[f"{prefix}.fc.2.bias"]))
    return x * y[:, :, None, None]


def ir_block(sd, p, x, stride=1):
    slope = sd[f"{p}.prelu.weight"]  # one slope, used twice
    out = F.prelu(bn(sd, f"{p}.bn1", conv(sd, f"{p}.conv1", bn(sd, f"{p}.bn0", x))), slope)
    out = bn(sd, f"{p}.bn2", conv(sd, f"{p}.conv2", out, stride=stride))
    if f"{p}.se.fc.0.weight" in sd:
        out = se(sd, f"{p}.se", out)
    residual = x
    if f"{p}.downsample.0.weight" in sd:
        residual = bn(sd, f"{p}.downsample.1", conv(sd, f"{p}.downsample.0", x, stride=stride, padding=0))
    return F.prelu(out + residual, slope)


def resnet_arcface(sd, x, layers=(2, 2, 2, 2)):
    x = F.max_pool2d(F.prelu(bn(sd, "bn1", conv(sd, "conv1", x)), sd["prelu.weight"]), 2, 2)
    for stage, n in enumerate(layers, start=1):
        for i in range(n):
            x = ir_block(sd, f"layer{stage}.{i}", x, stride=2 if (i == 0 and stage > 1) else 1)
    x = bn(sd, "bn4", x).flatten(1)  # dropout is the identity in eval mode
    x = F.linear(x, sd["fc5.weight"], sd["fc5.bias"])
    return F.batch_norm(x, sd["bn5.running_mean"], sd["bn5.running_var"], sd["bn5.weight"], sd["bn5.bias"],
                        training=False, eps=1e-5)
