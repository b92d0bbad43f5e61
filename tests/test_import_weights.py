"""Importing ONNX recognition models into tfface backbones, onnxruntime as the oracle.

A small iresnet with random weights (random BatchNorm statistics too) is
written with `onnx.helper` in two forms that exporters produce: an MXNet-like
graph (normalization inside the graph, explicit BatchNormalization nodes with
eps 2e-5, Dropout, main branch added first) and a model-zoo-like graph
(constant-folded: convs with biases, lone BatchNorms as Mul + Add, shortcut
added first, Reshape + MatMul + Add head, meaningless initializer names).
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import assert_same_embeddings
from conftest import run_tool

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper, TensorProto  # noqa: E402

from tfface import weights  # noqa: E402

UNITS, WIDTHS, STEM, EMBEDDING = (1, 2, 1, 1), (8, 16, 16, 32), 8, 64
OVERRIDES = {"units": UNITS, "widths": WIDTHS, "stem_width": STEM}
MXNET_EPS = 2e-5


def iresnet_state(seed=0):
  """Random arcface_torch-named iresnet tensors (a state_dict as numpy)."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, cout, cin, k):
    state[f"{name}.weight"] = rng.normal(0, (2 / (cin * k * k)) ** .5,
                                         (cout, cin, k, k)).astype(np.float32)

  def bn(name, c, gamma=True):
    state[f"{name}.weight"] = (rng.uniform(0.5, 1.5, c) if gamma
                               else np.ones(c)).astype(np.float32)
    state[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    state[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)

  def prelu(name, c):
    state[f"{name}.weight"] = rng.uniform(0, 0.5, c).astype(np.float32)

  conv("conv1", STEM, 3, 3), bn("bn1", STEM), prelu("prelu", STEM)
  cin = STEM
  for s, (n, w) in enumerate(zip(UNITS, WIDTHS), 1):
    for u in range(n):
      p = f"layer{s}.{u}"
      bn(f"{p}.bn1", cin), conv(f"{p}.conv1", w, cin, 3), bn(f"{p}.bn2", w)
      prelu(f"{p}.prelu", w), conv(f"{p}.conv2", w, w, 3), bn(f"{p}.bn3", w)
      if u == 0:
        conv(f"{p}.downsample.0", w, cin, 1), bn(f"{p}.downsample.1", w)
      cin = w
  bn("bn2", cin)
  state["fc.weight"] = rng.normal(0, 0.02, (EMBEDDING, cin * 49)).astype(np.float32)
  state["fc.bias"] = rng.normal(0, 0.1, EMBEDDING).astype(np.float32)
  bn("features", EMBEDDING)  # gamma != 1: folded into the variance on import
  return state


class _Writer:
  """Accumulates ONNX nodes and initializers."""

  def __init__(self, state, eps, hide_names):
    self.state, self.eps, self.hide = state, eps, hide_names
    self.nodes, self.inits, self.n = [], [], 0

  def const(self, value, name):
    self.n += 1
    name = f"onnx::{name.split('.')[-1]}_{self.n}" if self.hide else name
    self.inits.append(numpy_helper.from_array(np.asarray(value), name))
    return name

  def node(self, op, inputs, **attrs):
    self.n += 1
    out = f"t{self.n}"
    self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.n}",
                                       **attrs))
    return out

  def bn_scale_shift(self, name):
    s = self.state
    scale = s[f"{name}.weight"] / np.sqrt(s[f"{name}.running_var"] + self.eps)
    return scale, s[f"{name}.bias"] - s[f"{name}.running_mean"] * scale

  def bn(self, x, name):
    keys = ("weight", "bias", "running_mean", "running_var")
    return self.node("BatchNormalization", [x] + [
        self.const(self.state[f"{name}.{k}"], f"{name}.{k}") for k in keys],
                     epsilon=self.eps)

  def bn_as_mul_add(self, x, name):
    scale, shift = self.bn_scale_shift(name)
    x = self.node("Mul", [x, self.const(scale.reshape(1, -1, 1, 1), name)])
    return self.node("Add", [x, self.const(shift.reshape(1, -1, 1, 1), name)])

  def conv(self, x, name, stride=1, bn=None):
    """Conv (k from the weight, pad k // 2); with `bn`, that BN folded in."""
    w = self.state[f"{name}.weight"]
    inputs = [x]
    if bn:
      scale, shift = self.bn_scale_shift(bn)
      inputs += [self.const(w * scale[:, None, None, None], name),
                 self.const(shift, bn)]
    else:
      inputs.append(self.const(w, f"{name}.weight"))
    p = w.shape[-1] // 2
    return self.node("Conv", inputs, kernel_shape=list(w.shape[2:]),
                     strides=[stride, stride], pads=[p] * 4)

  def prelu(self, x, name):
    return self.node("PRelu", [x, self.const(
        self.state[f"{name}.weight"].reshape(-1, 1, 1), f"{name}.weight")])


def iresnet_onnx(state, style, path, extra=None):
  """Writes the iresnet of `state` as an ONNX graph of `style` mxnet/folded."""
  folded = style == "folded"
  w = _Writer(state, 1e-5 if folded else MXNET_EPS, hide_names=folded)
  x = "data"
  if not folded:  # MXNet graphs normalize raw pixels themselves
    x = w.node("Sub", [x, w.const(np.float32(127.5), "minusscalar0")])
    x = w.node("Mul", [x, w.const(np.float32(1 / 128), "mulscalar0")])
  x = w.prelu(w.conv(x, "conv1", bn="bn1") if folded
              else w.bn(w.conv(x, "conv1"), "bn1"), "prelu")
  for s, n in enumerate(UNITS, 1):
    for u in range(n):
      p, stride = f"layer{s}.{u}", 2 if u == 0 else 1
      shortcut = x
      if folded:
        if u == 0:
          shortcut = w.conv(x, f"{p}.downsample.0", stride, bn=f"{p}.downsample.1")
        y = w.prelu(w.conv(w.bn_as_mul_add(x, f"{p}.bn1"), f"{p}.conv1",
                           bn=f"{p}.bn2"), f"{p}.prelu")
        y = w.conv(y, f"{p}.conv2", stride, bn=f"{p}.bn3")
        x = w.node("Add", [shortcut, y])
      else:
        y = w.bn(w.conv(w.bn(x, f"{p}.bn1"), f"{p}.conv1"), f"{p}.bn2")
        y = w.bn(w.conv(w.prelu(y, f"{p}.prelu"), f"{p}.conv2", stride), f"{p}.bn3")
        if u == 0:
          shortcut = w.bn(w.conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1")
        x = w.node("Add", [y, shortcut])
  x = w.bn(x, "bn2")
  if folded:
    x = w.node("Reshape", [x, w.const(np.array([0, -1], np.int64), "shape")])
    x = w.node("MatMul", [x, w.const(state["fc.weight"].T.copy(), "fc.weight")])
    x = w.node("Add", [x, w.const(state["fc.bias"], "fc.bias")])
  else:
    x = w.node("Flatten", [w.node("Dropout", [x])], axis=1)
    x = w.node("Gemm", [x, w.const(state["fc.weight"], "fc.weight"),
                        w.const(state["fc.bias"], "fc.bias")], transB=1)
  x = w.bn(x, "features")
  for name, value in (extra or {}).items():
    w.inits.append(numpy_helper.from_array(value, name))
  graph = helper.make_graph(
      w.nodes, "iresnet", [helper.make_tensor_value_info(
          "data", TensorProto.FLOAT, ["batch", 3, 112, 112])],
      [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", EMBEDDING])],
      w.inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return path


def run_onnx(path, images, mean, std):
  """The oracle: onnxruntime on NCHW images normalized as the source expects."""
  x = ((images.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
  session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]


@pytest.fixture(scope="module")
def images():
  """Six smooth random RGB images, uint8 [6, 112, 112, 3]."""
  rng = np.random.default_rng(7)
  raw = rng.integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
  return np.stack([cv2.GaussianBlur(i, (5, 5), 0) for i in raw])


@pytest.fixture(scope="module")
def state():
  return iresnet_state()


@pytest.fixture(scope="module")
def mxnet_onnx(state, tmp_path_factory):
  return iresnet_onnx(state, "mxnet", tmp_path_factory.mktemp("mx") / "mx.onnx")


def test_mxnet_style_graph(mxnet_onnx, images):
  model, report = weights.import_with_report(mxnet_onnx, "r18", EMBEDDING,
                                             **OVERRIDES)
  # The normalization inside the graph moved into the model, exactly.
  assert (report["input_mean"], report["input_std"]) == (127.5, 128.0)
  assert report["normalization"] == "found in the ONNX graph"
  assert report["bn_epsilon"] == MXNET_EPS
  assert model.get_layer("stem_bn").epsilon == MXNET_EPS
  # Every initializer but the two normalization scalars is a weight.
  assert report["tensors"] == len(onnx.load(str(mxnet_onnx)).graph.initializer) - 2
  expected = run_onnx(mxnet_onnx, images, 0.0, 1.0)  # raw pixels in
  assert_same_embeddings(model(images.astype(np.float32)).numpy(), expected)


def test_folded_model_zoo_style_graph(state, images, tmp_path):
  path = iresnet_onnx(state, "folded", tmp_path / "zoo.onnx")
  model, report = weights.import_with_report(path, "r18", None, **OVERRIDES)
  assert report["embedding_size"] == EMBEDDING  # taken from the source
  assert (report["input_mean"], report["input_std"]) == (127.5, 127.5)
  assert report["normalization"] == "arcface_torch's default, as the source stores none"
  # 1 stem + 5 units x 2 + 4 shortcut convs carried BN-folded biases; the
  # Mul + Add pairs are identity-form BatchNorms too.
  assert report["identity_batchnorms"] == 1 + 2 * sum(UNITS) + 4 + sum(UNITS)
  expected = run_onnx(path, images, 127.5, 127.5)
  assert_same_embeddings(model(images.astype(np.float32)).numpy(), expected)


def test_lists_unmatched_tensors_and_shape_mismatches(state, tmp_path):
  path = iresnet_onnx(state, "mxnet", tmp_path / "extra.onnx",
                      extra={"stray.weight": np.ones((3, 3), np.float32)})
  with pytest.raises(ValueError) as info:
    weights.import_weights(path, "r18", embedding_size=32, **OVERRIDES)
  message = str(info.value)
  assert "'stray.weight' feeds no layer" in message
  assert "head_fc/kernel: Keras expects (1568, 32); source fc.weight has shape (64, 1568)" in message
  assert "head_features/moving_mean: Keras expects (32,)" in message


def test_structure_mismatch_names_the_place(mxnet_onnx):
  with pytest.raises(ValueError, match=r"does not have the structure of Keras "
                     r"model 'r18'.*stage2_unit1_add.*added branches differ"):
    weights.import_weights(mxnet_onnx, "r18", EMBEDDING, units=(1, 1, 1, 1),
                           widths=WIDTHS, stem_width=STEM)


def test_unsupported_operator_names_the_node(mxnet_onnx, tmp_path):
  model = onnx.load(str(mxnet_onnx))
  prelu = next(n for n in model.graph.node if n.op_type == "PRelu")
  prelu.op_type, prelu.input[:] = "Relu", prelu.input[:1]
  bad = tmp_path / "relu.onnx"
  onnx.save(model, str(bad))
  with pytest.raises(ValueError, match=rf"{bad}: node #\d+ Relu 'PRelu_\d+': "
                     "operator not supported"):
    weights.import_weights(bad, "r18", EMBEDDING, **OVERRIDES)


def test_missing_torch_gives_a_clear_message(tmp_path, monkeypatch):
  path = tmp_path / "backbone.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
  with pytest.raises(ValueError, match=r"backbone.pth: reading PyTorch .pth "
                     r"files needs `torch`"):
    weights.import_weights(path, "r50")
  with pytest.raises(ValueError, match="into r18/r34/r50/r100/r200 and mbf"):
    weights.import_weights(path, "m1")


@pytest.mark.slow
def test_tool_writes_a_model_or_fails_with_the_list(state, mxnet_onnx, images,
                                                    tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import keras  # pylint: disable=import-outside-toplevel
  output = tmp_path / "out" / "imported.keras"
  overrides = json.dumps(OVERRIDES)
  proc = run_tool("import_weights", f"--source={mxnet_onnx}", "--network=r18",
                  f"--embedding_size={EMBEDDING}", f"--output={output}",
                  f"--overrides={overrides}")
  assert "(x - 127.5) / 128 on RGB pixels, found in the ONNX graph" in proc.stdout
  model = keras.saving.load_model(output, compile=False)
  assert_same_embeddings(model(images.astype(np.float32)).numpy(),
                         run_onnx(mxnet_onnx, images, 0.0, 1.0))
  bad = run_tool("import_weights", f"--source={mxnet_onnx}", "--network=r18",
                 "--embedding_size=32", f"--output={tmp_path / 'bad.keras'}",
                 f"--overrides={overrides}", check=False)
  assert bad.returncode == 1
  assert bad.stderr.startswith("error: ") and "head_fc/kernel" in bad.stderr
  assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing half-written
  assert os.listdir(tmp_path / "out") == ["imported.keras"]


@pytest.fixture(scope="module")
def zoo_model(state, tmp_path_factory):
  """A model-zoo-style ONNX file and its import saved as .keras."""
  directory = tmp_path_factory.mktemp("zoo")
  source = iresnet_onnx(state, "folded", directory / "w600k_tiny.onnx")
  report = weights.convert(source, directory / "imported.keras", "r18",
                           EMBEDDING, **OVERRIDES)
  return source, report["output"]


def test_verify_on_imported_model_matches_onnxruntime(zoo_model, images, tmp_path):
  from tfface.data.insightface import verification_bin  # pylint: disable=import-outside-toplevel
  from tfface.evaluation import runner  # pylint: disable=import-outside-toplevel
  from tfface.evaluation import verification  # pylint: disable=import-outside-toplevel
  source, keras_path = zoo_model
  # 20 pairs: "same" pairs are an image and a noisy copy of it.
  rng = np.random.default_rng(5)
  pairs, issame = [], []
  for i in range(20):
    first, same = images[i % 6], i % 2 == 0
    other = images[(i % 6 + 1 + (i // 6) % 5) % 6]  # never `first` itself
    second = (np.clip(first + rng.normal(0, 8, first.shape), 0, 255).astype(np.uint8)
              if same else other)
    pairs += [first, second]
    issame.append(same)
  # .bin images are encoded from BGR arrays, as InsightFace's cv2 code does.
  encoded = [cv2.imencode(".png", p[:, :, ::-1])[1].tobytes() for p in pairs]
  bin_path = tmp_path / "tiny.bin"
  verification_bin.write_bin(str(bin_path), encoded, issame)
  (result,) = runner.verify_model(keras_path, [str(bin_path)], batch_size=16,
                                  echo=lambda line: None)
  # The same protocol on onnxruntime's embeddings of the same pixels.
  decoded = verification.decode_bin_images(verification_bin.load_bin(str(bin_path)))
  original = run_onnx(source, decoded, 127.5, 127.5)
  flipped = run_onnx(source, decoded[:, :, ::-1], 127.5, 127.5)
  expected = verification.evaluate_flip_pairs(original, flipped, issame)
  np.testing.assert_allclose(result.xnorm, expected.xnorm, rtol=1e-5)
  np.testing.assert_allclose(result.distances, expected.distances, atol=1e-5)
  assert result.accuracy_flip_mean == expected.accuracy_flip_mean


# Runs in a fresh interpreter that never imports tfface.
FRESH_SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
path, images_path, out_path = sys.argv[1:4]
loaded = tf.saved_model.load(path)
images = tf.constant(np.load(images_path))
raw = loaded.raw_embedding(images).numpy()
unit = loaded.signatures["serve_images"](images=images)["embedding"].numpy()
assert not [m for m in sys.modules if m.split(".")[0] in ("tfface", "tfface_tools")]
np.save(out_path, np.stack([raw, unit]))
'''


@pytest.mark.slow
def test_saved_model_of_imported_model_matches_onnxruntime(zoo_model, images,
                                                          tmp_path):
  from tfface import export  # pylint: disable=import-outside-toplevel
  source, keras_path = zoo_model
  version = export.export_saved_model(keras_path, str(tmp_path / "face"), 1)
  np.save(tmp_path / "images.npy", images)
  script = tmp_path / "fresh.py"
  script.write_text(FRESH_SCRIPT)
  subprocess.run([sys.executable, str(script), version, str(tmp_path / "images.npy"),
                  str(tmp_path / "out.npy")], check=True, timeout=300,
                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  raw, unit = np.load(tmp_path / "out.npy")
  expected = run_onnx(source, images, 127.5, 127.5)
  assert_same_embeddings(raw, expected)
  np.testing.assert_allclose(
      unit, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


def test_a_file_that_is_neither_zip_nor_pickle_is_not_a_pytorch_checkpoint(tmp_path):
  pytest.importorskip("torch")
  for name, data in (("junk.pth", bytes(range(7, 256)) * 8), ("text.pth", b"hello world\n")):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
      weights.import_weights(path, "r18", EMBEDDING, **OVERRIDES)
    assert str(info.value) == (f"{path}: not a PyTorch checkpoint (neither a zip archive "
                               "nor a pickle)")
