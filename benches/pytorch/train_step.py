"""PyTorch-eager twin of `hetvis-train step-bench`: the same training step on the same network.

The network is not re-implemented here: it is built from the lowered layer graph that hetvis-models produces
(`hetvis-train step-bench --emit-net`), the one definition the tch builder, the FLOPs counter and the ONNX
exporter also walk. Prints one JSON object like the Rust side.

usage: python train_step.py NET.json --batch 64 --warmup 3 --steps 10 --threads 2
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class GraphNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.nodes = net["nodes"]
        self.output = net["output"]
        self.layers = nn.ModuleList()
        for node in self.nodes:
            op = node["op"]
            kind = op["op"]
            if kind == "conv":
                m = nn.Conv2d(op["cin"], op["cout"], op["kernel"], op["stride"], op["padding"],
                              groups=op["groups"], bias=op["bias"])
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif kind == "batch_norm":
                m = _BatchNorm(op["channels"], op["affine"])
            elif kind == "linear":
                m = nn.Linear(op["cin"], op["cout"], bias=op["bias"])
            else:
                m = nn.Identity()
            self.layers.append(m)

    def forward(self, x):
        vals = [x]
        for node, layer in zip(self.nodes, self.layers):
            op, ins = node["op"], node["inputs"]
            a = vals[ins[0]]
            kind = op["op"]
            if kind in ("conv", "batch_norm", "linear"):
                y = layer(a)
            elif kind == "relu":
                y = F.relu(a)
            elif kind == "relu6":
                y = F.relu6(a)
            elif kind == "max_pool":
                y = F.max_pool2d(a, op["kernel"], op["stride"], op["padding"])
            elif kind == "global_avg_pool":
                y = a.mean((2, 3))
            elif kind == "add":
                y = a + vals[ins[1]]
            elif kind == "slice_channels":
                y = a[:, op["start"]:op["start"] + op["len"]]
            elif kind == "concat":
                y = torch.cat([vals[i] for i in ins], 1)
            elif kind == "channel_shuffle":
                n, c, h, w = a.shape
                g = op["groups"]
                y = a.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
            elif kind == "l2_normalize":
                y = F.normalize(a, dim=1)
            else:
                raise ValueError(f"unknown op {kind}")
            vals.append(y)
        return vals[self.output]


class _BatchNorm(nn.Module):
    """Batch norm over channels of an NCHW or NC tensor, like the tch builder's."""

    def __init__(self, channels, affine):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, 0.1, 1e-5)


def cosine_loss(e, weight, y, scale=16.0, margin=0.2):
    cos = e @ F.normalize(weight, dim=1).t()
    cos = cos - margin * F.one_hot(y, weight.shape[0]).to(cos.dtype)
    return F.cross_entropy(cos * scale, y)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("net")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.net) as f:
        net_json = json.load(f)
    model = GraphNet(net_json).train()
    c, h, w = net_json["input"]["Chw"]
    dim = next(n["op"]["cout"] for n in reversed(net_json["nodes"]) if n["op"]["op"] == "linear")
    head = nn.Parameter(torch.randn(args.classes, dim) * 0.01)
    opt = torch.optim.SGD(list(model.parameters()) + [head], lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    x = torch.randn(args.batch, c, h, w)
    y = torch.randint(args.classes, (args.batch,))
    rates = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = cosine_loss(model(x), head, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if i >= args.warmup:
            rates.append(args.batch / (time.perf_counter() - start))
    s = sorted(rates)
    print(json.dumps({"batch": args.batch, "threads": torch.get_num_threads(), "images_per_s": rates,
                      "median_images_per_s": s[len(s) // 2], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
