"""arcface_torch's training step in PyTorch: the baseline `train_step.py` measures against.

The backbone is arcface_torch's `iresnet` architecture (LResNet-E-IR: BN,
conv3x3, BN, PReLU, conv3x3/s, BN plus shortcut; BN, FC 7*7*512 -> 512, BN
with a fixed scale), written here from its description in
../shared/REFERENCE.md and checked against arcface_torch's published
parameter counts (`parameter_count`). Given `arcface_torch_dir` (a checkout of
`recognition/arcface_torch`), arcface_torch's own `backbones.get_model` is
used instead.

The step is arcface_torch's: backbone, L2-normalized FC (ArcFace, s = 64,
m = 0.5), softmax cross-entropy, SGD with momentum 0.9 and weight decay 5e-4
over backbone and FC.
"""
import math
import sys

import torch
from torch import nn
from torch.nn import functional as F

UNITS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3),
         "r100": (3, 13, 30, 3), "r200": (6, 26, 60, 6)}


class _Unit(nn.Module):
  """One IR unit: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus the shortcut."""

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.body = nn.Sequential(
        nn.BatchNorm2d(inplanes, eps=1e-5),
        nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False),
        nn.BatchNorm2d(planes, eps=1e-5),
        nn.PReLU(planes),
        nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
        nn.BatchNorm2d(planes, eps=1e-5))
    self.shortcut = None
    if stride != 1 or inplanes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                    nn.BatchNorm2d(planes, eps=1e-5))

  def forward(self, x):
    return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class IResNet(nn.Module):
  """LResNet-E-IR for 112x112 faces, 512-d output, as arcface_torch builds it."""

  def __init__(self, units, embedding_size=512):
    super().__init__()
    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64, eps=1e-5),
              nn.PReLU(64)]
    inplanes = 64
    for count, planes in zip(units, (64, 128, 256, 512)):
      for index in range(count):
        layers.append(_Unit(inplanes, planes, 2 if index == 0 else 1))
        inplanes = planes
    layers.append(nn.BatchNorm2d(512, eps=1e-5))
    self.body = nn.Sequential(*layers)
    self.fc = nn.Linear(512 * 7 * 7, embedding_size)
    self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
    nn.init.constant_(self.features.weight, 1.0)
    self.features.weight.requires_grad = False  # fixed gamma, as arcface_torch

  def forward(self, x):
    return self.features(self.fc(torch.flatten(self.body(x), 1)))


def build(name, arcface_torch_dir=""):
  """arcface_torch's backbone `name` (its own code when `arcface_torch_dir` is given)."""
  if arcface_torch_dir:
    sys.path.insert(0, arcface_torch_dir)
    from backbones import get_model  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    return get_model(name, fp16=False, num_features=512)
  return IResNet(UNITS[name])


def parameter_count(model):
  """PyTorch parameters, the fixed BN weight included (arcface_torch's convention)."""
  return sum(p.numel() for p in model.parameters())


class ArcFaceStep:
  """arcface_torch's whole step on a fixed batch: backbone, ArcFace FC, CE, SGD."""

  def __init__(self, backbone, num_classes, s=64.0, m=0.5):
    self.backbone = backbone.train()
    self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, 512)))
    self.s, self.m = s, m
    self.optimizer = torch.optim.SGD(
        [{"params": [p for p in backbone.parameters() if p.requires_grad]},
         {"params": [self.weight]}], lr=0.1, momentum=0.9, weight_decay=5e-4)

  def __call__(self, images, labels):
    embeddings = self.backbone(images)
    cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1, 1)
    target = cosine.gather(1, labels[:, None])
    theta = torch.acos(target)
    margined = torch.where(theta + self.m < math.pi, torch.cos(theta + self.m),
                           target - math.sin(math.pi - self.m) * self.m)
    logits = self.s * cosine.scatter(1, labels[:, None], margined)
    loss = F.cross_entropy(logits, labels)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return float(loss)
