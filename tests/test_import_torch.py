"""Importing arcface_torch backbones: PyTorch itself and its ONNX exports as oracles.

The torch modules below are small re-statements of arcface_torch's iresnet
and MobileFaceNet with the same module names (so their state_dicts have the
same keys), random weights and random BatchNorm statistics. Each is imported
from its `.pth` state_dict and from `torch.onnx.export` files with and
without constant folding (folding merges every conv+BN, as in the model zoo).
"""
import numpy as np
import pytest

from conftest import assert_same_embeddings

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from tfface import weights  # noqa: E402


class IRUnit(nn.Module):
  """arcface_torch IBasicBlock: bn1 conv1 bn2 prelu conv2 bn3 (+ downsample)."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    self.bn2, self.prelu = nn.BatchNorm2d(cout), nn.PReLU(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
  """arcface_torch IResNet with configurable units/widths, 112x112 input."""

  def __init__(self, units, widths, stem, embedding):
    super().__init__()
    self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
    self.bn1, self.prelu = nn.BatchNorm2d(stem), nn.PReLU(stem)
    cin = stem
    for stage, (count, width) in enumerate(zip(units, widths), 1):
      blocks = [IRUnit(cin if u == 0 else width, width, 2 if u == 0 else 1)
                for u in range(count)]
      setattr(self, f"layer{stage}", nn.Sequential(*blocks))
      cin = width
    self.bn2, self.dropout = nn.BatchNorm2d(cin), nn.Dropout(0.0)
    self.fc = nn.Linear(cin * 49, embedding)
    self.features = nn.BatchNorm1d(embedding)
    nn.init.constant_(self.features.weight, 1.0)  # fixed, as arcface_torch
    self.features.weight.requires_grad = False

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


class Unit(nn.Module):
  """arcface_torch ConvBlock (with PReLU) / LinearBlock (without)."""

  def __init__(self, cin, cout, k=1, s=1, p=0, groups=1, act=True):
    super().__init__()
    parts = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False),
             nn.BatchNorm2d(cout)]
    self.layers = nn.Sequential(*(parts + [nn.PReLU(cout)] if act else parts))

  def forward(self, x):
    return self.layers(x)


class DepthWise(nn.Module):
  """arcface_torch DepthWise: expand, depthwise, linear project (+ identity)."""

  def __init__(self, cin, cout, residual, stride, groups):
    super().__init__()
    self.residual = residual
    self.layers = nn.Sequential(Unit(cin, groups), Unit(groups, groups, 3, stride, 1, groups),
                                Unit(groups, cout, act=False))

  def forward(self, x):
    return x + self.layers(x) if self.residual else self.layers(x)


class Residual(nn.Module):

  def __init__(self, c, count, groups):
    super().__init__()
    self.layers = nn.Sequential(*[DepthWise(c, c, True, 1, groups) for _ in range(count)])

  def forward(self, x):
    return self.layers(x)


class Flatten(nn.Module):

  def forward(self, x):
    return x.view(x.size(0), -1)  # exports as Shape/Gather/Concat/Reshape


class GDC(nn.Module):

  def __init__(self, c, embedding):
    super().__init__()
    self.layers = nn.Sequential(Unit(c, c, 7, 1, 0, c, act=False), Flatten(),
                                nn.Linear(c, embedding, bias=False),
                                nn.BatchNorm1d(embedding))

  def forward(self, x):
    return self.layers(x)


class MobileFaceNet(nn.Module):
  """arcface_torch MobileFaceNet, widths times `mult` (its literals included)."""

  def __init__(self, embedding, blocks, scale=2, mult=1.0):
    super().__init__()
    w = lambda v: int(round(v * mult))  # noqa: E731
    a, b = w(64 * scale), w(128 * scale)
    first = (Unit(a, a, 3, 1, 1, groups=w(64)) if blocks[0] == 1
             else Residual(a, blocks[0], w(128)))
    self.layers = nn.ModuleList([
        Unit(3, a, 3, 2, 1), first,
        DepthWise(a, a, False, 2, w(128)), Residual(a, blocks[1], w(128)),
        DepthWise(a, b, False, 2, w(256)), Residual(b, blocks[2], w(256)),
        DepthWise(b, b, False, 2, w(512)), Residual(b, blocks[3], w(256))])
    self.conv_sep = Unit(b, w(512))
    self.features = GDC(w(512), embedding)

  def forward(self, x):
    for layer in self.layers:
      x = layer(x)
    return self.features(self.conv_sep(x))


def randomize(model, seed=0):
  """Random weights, BN affine parameters and running statistics; eval mode."""
  g = torch.Generator().manual_seed(seed)
  rand = lambda shape: torch.rand(shape, generator=g)  # noqa: E731
  with torch.no_grad():
    for name, m in model.named_modules():
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        m.weight.copy_(torch.randn(m.weight.shape, generator=g)
                       * (2.0 / m.weight[0].numel()) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(rand(m.bias.shape) - 0.5)
      elif isinstance(m, nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
        if m.weight.requires_grad:
          m.weight.copy_(rand(m.weight.shape) + 0.5)
        m.bias.copy_(rand(m.bias.shape) * 0.2 - 0.1)
        m.running_mean.copy_(rand(m.running_mean.shape) * 0.2 - 0.1)
        m.running_var.copy_(rand(m.running_var.shape) * 1.5 + 0.5)
      elif isinstance(m, nn.PReLU):
        m.weight.copy_(rand(m.weight.shape) * 0.5)
  return model.eval()


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(3)
  return rng.uniform(0, 255, (4, 112, 112, 3)).astype(np.float32)


def _torch_input(images):
  """arcface_torch's preprocessing: (x - 127.5) / 127.5, NCHW."""
  return torch.from_numpy(((images - 127.5) / 127.5).transpose(0, 3, 1, 2).copy())


def _export(net, images, path, fold):
  """Folded: as arcface_torch's torch2onnx.py (opset 11, input "data")."""
  torch.onnx.export(net, (_torch_input(images[:1]),), str(path), dynamo=False,
                    do_constant_folding=fold, input_names=["data"],
                    opset_version=11 if fold else 17,
                    dynamic_axes={"data": {0: "batch"}})
  session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  return session.run(None, {"data": _torch_input(images).numpy()})[0]


def _check_all_forms(net, network, overrides, embedding, images, tmp_path,
                     forms=("pth", True, False)):
  with torch.no_grad():
    expected = net(_torch_input(images)).numpy()
  for form in forms:
    if form == "pth":
      source, oracle = tmp_path / "backbone.pth", expected
      torch.save(net.state_dict(), source)
    else:
      source = tmp_path / f"fold{int(form)}.onnx"
      oracle = _export(net, images, source, form)
    model, report = weights.import_with_report(source, network, embedding,
                                               **overrides)
    assert (report["input_mean"], report["input_std"]) == (127.5, 127.5)
    assert report["bn_epsilon"] == 1e-5
    assert_same_embeddings(model(images).numpy(), oracle)
    # Constant folding leaves one identity-form BN per folded conv.
    folded = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert report["identity_batchnorms"] == (folded if form is True else 0)


def test_iresnet(images, tmp_path):
  net = randomize(IResNet((1, 2, 1, 1), (8, 16, 16, 32), 8, 64))
  _check_all_forms(net, "r34", {"units": (1, 2, 1, 1), "widths": (8, 16, 16, 32),
                                "stem_width": 8}, 64, images, tmp_path)


def test_mobilefacenet(images, tmp_path):
  net = randomize(MobileFaceNet(32, (1, 2, 1, 1), mult=0.125), seed=1)
  _check_all_forms(net, "mbf", {"blocks_per_stage": (1, 2, 1, 1),
                                "width_multiplier": 0.125}, 32, images, tmp_path,
                   forms=("pth", True))


def test_mobilefacenet_with_residual_stage0(images, tmp_path):
  net = randomize(MobileFaceNet(16, (2, 1, 1, 1), mult=0.125), seed=2)
  _check_all_forms(net, "mbf", {"blocks_per_stage": (2, 1, 1, 1),
                                "width_multiplier": 0.125}, 16, images, tmp_path,
                   forms=("pth",))


def test_state_dict_errors_list_every_tensor(tmp_path):
  net = randomize(IResNet((1, 1, 1, 1), (8, 8, 16, 16), 8, 32))
  overrides = {"units": (1, 1, 1, 1), "widths": (8, 8, 16, 16), "stem_width": 8}
  state = {f"module.{k}": v for k, v in net.state_dict().items()}  # DDP names
  nested = tmp_path / "checkpoint.pth"
  torch.save({"state_dict": state, "epoch": 3}, nested)
  model = weights.import_weights(nested, "r18", 32, **overrides)
  np.testing.assert_array_equal(  # OIHW -> HWIO
      model.get_layer("stem_conv").get_weights()[0],
      net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  broken = dict(net.state_dict())
  del broken["layer2.0.bn3.running_var"]
  broken["layer5.0.conv1.weight"] = torch.zeros(3, 3)
  torch.save(broken, tmp_path / "broken.pth")
  with pytest.raises(ValueError) as info:
    weights.import_weights(tmp_path / "broken.pth", "r18", 32, **overrides)
  assert ("missing tensor 'layer2.0.bn3.running_var' for Keras layer "
          "'stage2_unit1_bn3'") in str(info.value)
  assert "tensor 'layer5.0.conv1.weight' (3, 3) matches no Keras layer" in str(info.value)
  torch.save(net, tmp_path / "module.pth")  # a pickled module, not a state_dict
  with pytest.raises(ValueError, match=r"module.pth: holds pickled Python "
                     r"objects .*torch.save\(model.state_dict\(\), path\)"):
    weights.import_weights(tmp_path / "module.pth", "r18", 32, **overrides)


@pytest.mark.slow
def test_full_size_r50_state_dict_maps_without_a_forward_pass(tmp_path):
  # arcface_torch r50 at 512-d: 43,590,848 parameters + 38,144 BN statistics.
  net = IResNet((3, 4, 14, 3), (64, 128, 256, 512), 64, 512).eval()
  state = net.state_dict()
  assert sum(p.numel() for p in net.parameters()) == 43_590_848
  assert sum(v.numel() for k, v in state.items()
             if k.endswith(("running_mean", "running_var"))) == 38_144
  torch.save(state, tmp_path / "backbone.pth")
  model, report = weights.import_with_report(tmp_path / "backbone.pth", "r50")
  assert report["tensors"] == sum(
      1 for k in state if not k.endswith("num_batches_tracked"))
  fc = model.get_layer("head_fc").get_weights()[0]
  # Row (h * 7 + w) * 512 + c of the Keras kernel is PyTorch column c * 49 + h * 7 + w.
  torch_fc = state["fc.weight"].numpy()
  for h, w, c in ((0, 0, 1), (3, 5, 100), (6, 6, 511)):
    np.testing.assert_array_equal(fc[(h * 7 + w) * 512 + c], torch_fc[:, c * 49 + h * 7 + w])
