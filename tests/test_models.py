"""Backbones: golden parameter counts, stage shapes, MXNet as an oracle, serialization."""
import json
import subprocess
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface import models
from tfface.models import complexity

# arcface_torch iresnet, 512-d: (PyTorch parameters incl. the 512 fixed
# gammas of `features`, BatchNorm running-statistics entries).
TORCH_COUNTS = {
    "r18": (24_025_600, 14_720),
    "r34": (34_139_328, 25_856),
    "r50": (43_590_848, 38_144),
    "r100": (65_156_160, 69_632),
    "r200": (118_833_920, 136_064),
}
MBF_TORCH_PARAMS = 2_059_520
# MXNet's published FLOP counts (2 x multiply-accumulates) at 112x112.
MXNET_GFLOPS = {"r34": 8.9, "r50": 12.6, "r100": 24.2}

# Test-size variants of each family, shared with test_heads / benchmarks.
SMALL = {
    "r18": dict(units=(2, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16),
    "mbf": dict(width_multiplier=0.25, blocks_per_stage=(1, 2, 1, 1)),
    "m1": dict(multiplier=0.25),
}


def _counts(model):
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
  fixed = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
  return trainable, fixed


def _images(n=2, size=112, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


def _randomize(model, seed=0):
  """Non-trivial BN statistics, gammas and PReLU slopes, so structure matters."""
  rng = np.random.default_rng(seed)
  for v in model.weights:
    leaf = v.path.split("/")[-1]
    if leaf == "moving_variance":
      v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
    elif leaf in ("moving_mean", "beta", "bias"):
      v.assign(rng.normal(0.0, 0.1, v.shape).astype("float32"))
    elif leaf in ("gamma", "alpha"):
      v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))


@pytest.mark.parametrize("name", [
    "r18", "r34", "r50",
    pytest.param("r100", marks=pytest.mark.slow),
    pytest.param("r200", marks=pytest.mark.slow)])
def test_iresnet_parameter_counts_match_arcface_torch(name):
  model = models.build_backbone(name)
  trainable, fixed = _counts(model)
  torch_params, torch_stats = TORCH_COUNTS[name]
  # Keras drops the fixed gamma of `head_features` (scale=False).
  assert trainable == torch_params - 512
  assert fixed == torch_stats
  assert model.count_params() == torch_params - 512 + torch_stats
  if name in MXNET_GFLOPS:
    assert round(2 * complexity.count_macs(model) / 1e9, 1) == MXNET_GFLOPS[name]
  keras.backend.clear_session()


def test_mobilefacenet_parameter_count_matches_arcface_torch():
  for name in ("mbf", "y1"):
    trainable, _ = _counts(models.build_backbone(name))
    assert trainable == MBF_TORCH_PARAMS


def test_m1_parameter_count_matches_its_definition():
  # Derived from the MXNet fmobilenet layout, not from our builder:
  # conv kernels, BN beta only (fixed gamma) + PReLU slope per channel.
  widths = [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
  expected = 3 * 9 * 32 + 2 * 32
  for cin, cout in zip(widths[:-1], widths[1:]):
    expected += cin * 9 + 2 * cin + cin * cout + 2 * cout
  expected += 2 * 1024 + 1024  # head_bn gamma/beta + head_prelu
  expected += 1024 * 512 + 512 + 512  # head_fc with bias, head_features beta
  trainable, _ = _counts(models.build_backbone("m1"))
  assert trainable == expected == 3_735_360


STAGE_SHAPES = {
    "r18": {"stem_prelu": (112, 112, 64), "stage1_unit2_add": (56, 56, 64),
            "stage2_unit2_add": (28, 28, 128), "stage3_unit2_add": (14, 14, 256),
            "stage4_unit2_add": (7, 7, 512), "head_flatten": (25088,),
            "head_features": (512,)},
    "mbf": {"stem_prelu": (56, 56, 128), "stem_dw_prelu": (56, 56, 128),
            "stage1_block4_add": (28, 28, 128), "stage2_block6_add": (14, 14, 256),
            "stage3_block2_add": (7, 7, 256), "conv_sep_prelu": (7, 7, 512),
            "gdc_bn": (1, 1, 512), "head_features": (512,)},
    "m1": {"stem_prelu": (112, 112, 32), "block1_pw_prelu": (112, 112, 64),
           "block2_dw_prelu": (56, 56, 64), "block4_dw_prelu": (28, 28, 128),
           "block6_dw_prelu": (14, 14, 256), "block12_dw_prelu": (7, 7, 512),
           "block13_pw_prelu": (7, 7, 1024), "head_pool": (1024,),
           "head_features": (512,)},
}


@pytest.mark.parametrize("name", sorted(STAGE_SHAPES))
def test_stage_output_shapes(name):
  model = models.build_backbone(name)
  for layer_name, shape in STAGE_SHAPES[name].items():
    assert model.get_layer(layer_name).output.shape[1:] == shape, layer_name
  keras.backend.clear_session()


def test_small_variant_and_input_handling():
  model = models.build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                                widths=(16, 32, 64, 128), stem_width=16)
  images = _images()
  out = model(images)
  assert out.shape == (2, 128) and out.dtype == tf.float32
  # uint8 and float pixels give the same embedding.
  np.testing.assert_allclose(model(images.astype("float32")), out, atol=1e-6)
  norm = model.get_layer("normalize")
  np.testing.assert_allclose(norm(np.array([[0.0, 127.5, 255.0]])),
                             [[-127.5 / 128, 0.0, 127.5 / 128]], atol=1e-7)
  torch_norm = models.build_backbone("r18", input_std=127.5, **SMALL["r18"])
  assert torch_norm.get_layer("normalize").std == 127.5


def test_grouped_conv_equals_keras_grouped_conv2d():
  # mbf's stem_dw: 64 groups of 2 channels, computed as depthwise + group sum.
  layer = models.build_backbone("mbf").get_layer("stem_dw_conv")
  assert isinstance(layer, models.layers.GroupedConv2D)
  assert tuple(layer.kernel.shape) == (3, 3, 2, 128) and layer.groups == 64
  x = tf.random.stateless_normal((2, 9, 9, 12), seed=(1, 2))
  ref = keras.layers.Conv2D(18, 3, strides=2, groups=6, use_bias=False)
  ref.build(x.shape)
  ours = models.layers.GroupedConv2D(18, 3, strides=2, groups=6, use_bias=False)
  ours.build(x.shape)
  ours.kernel.assign(ref.kernel)
  np.testing.assert_allclose(ours(x), ref(x), atol=1e-5)


def test_unknown_names_and_overrides_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown backbone 'r19'"):
    models.build_backbone("r19")
  with pytest.raises(ValueError, match="width_multiplier"):
    models.build_backbone("r18", width_multiplier=0.5)
  with pytest.raises(ValueError, match="units"):
    models.build_backbone("r18", units=(1, 1, 1))


# Evaluates the exported graph with MXNet's own operators in NCHW: its
# Convolution pads symmetrically (pad=1), as the original InsightFace did,
# and its Flatten is NCHW, so the FC weights are permuted as an importer must.
_MXNET_FORWARD = textwrap.dedent("""
    import json, sys
    import numpy as np, mxnet as mx
    nd = mx.nd
    spec = json.load(open(sys.argv[1])); w = np.load(sys.argv[2])
    vals, pads, flat_shape = {}, {}, {}
    for node in spec:
      t, name, ins, cfg = node["type"], node["name"], node["inputs"], node["config"]
      a = [vals[i] for i in ins]
      if t == "InputLayer":
        out = nd.array(np.load(sys.argv[3]).astype("float32").transpose(0, 3, 1, 2))
      elif t == "InputNormalization":
        out = (a[0] - cfg["mean"]) / cfg["std"]
      elif t == "ZeroPadding2D":
        pads[name] = cfg["pad"]; out = a[0]
      elif t in ("Conv2D", "DepthwiseConv2D"):
        k = w[name + "/kernel"]
        pad = pads.get(ins[0], 0)
        if t == "Conv2D":
          weight, groups = k.transpose(3, 2, 0, 1), cfg["groups"]
        else:
          weight, groups = k.transpose(2, 3, 0, 1), k.shape[2]
        out = nd.Convolution(a[0], nd.array(weight), kernel=k.shape[:2],
                             stride=(cfg["stride"],) * 2, pad=(pad, pad),
                             num_filter=weight.shape[0], num_group=groups, no_bias=True)
      elif t == "BatchNormalization":
        c = w[name + "/beta"].shape[0]
        gamma = w[name + "/gamma"] if name + "/gamma" in w else np.ones(c, "float32")
        out = nd.BatchNorm(a[0], nd.array(gamma), nd.array(w[name + "/beta"]),
                           nd.array(w[name + "/moving_mean"]),
                           nd.array(w[name + "/moving_variance"]),
                           eps=cfg["eps"], fix_gamma=False, use_global_stats=True)
      elif t == "PReLU":
        out = nd.LeakyReLU(a[0], gamma=nd.array(w[name + "/alpha"].reshape(-1)),
                           act_type="prelu")
      elif t == "Add":
        out = a[0] + a[1]
      elif t == "Dropout":
        out = a[0]; flat_shape[name] = flat_shape.get(ins[0])
      elif t == "Flatten":
        flat_shape[name] = a[0].shape[1:]; out = nd.flatten(a[0])
      elif t == "GlobalAveragePooling2D":
        out = nd.Pooling(a[0], global_pool=True, pool_type="avg", kernel=(1, 1)).flatten()
      elif t == "Dense":
        k = w[name + "/kernel"]
        if flat_shape.get(ins[0]):  # NHWC flatten in Keras -> NCHW here
          c, h, ww = flat_shape[ins[0]]
          weight = k.reshape(h, ww, c, -1).transpose(3, 2, 0, 1).reshape(k.shape[1], -1)
        else:
          weight = k.T
        bias = w.get(name + "/bias") if (name + "/bias") in w else None
        out = nd.FullyConnected(a[0], nd.array(weight),
                                nd.array(bias) if bias is not None else None,
                                num_hidden=k.shape[1], no_bias=bias is None)
      else:
        raise SystemExit("unsupported layer " + t)
      vals[name] = out
    np.save(sys.argv[4], vals[spec[-1]["name"]].asnumpy())
""")


def _export_graph(model):
  """Layer list with inbound names and the few config values MXNet needs."""
  spec = []
  for layer in model.layers:
    node = layer._inbound_nodes[0]  # noqa: SLF001  (functional graph walk)
    inputs = [t._keras_history.operation.name for t in node.input_tensors]  # noqa: SLF001
    cfg = {}
    kind = type(layer).__name__
    if kind == "GroupedConv2D":  # a Conv2D computed another way
      kind = "Conv2D"
    if kind == "InputNormalization":
      cfg = {"mean": layer.mean, "std": layer.std}
    elif kind == "ZeroPadding2D":
      cfg = {"pad": layer.padding[0][0]}
    elif kind in ("Conv2D", "DepthwiseConv2D"):
      cfg = {"stride": layer.strides[0], "groups": getattr(layer, "groups", 1)}
    elif kind == "BatchNormalization":
      cfg = {"eps": layer.epsilon}
    spec.append({"type": kind, "name": layer.name, "inputs": inputs, "config": cfg})
  return spec


@pytest.mark.mxnet
@pytest.mark.parametrize("name", sorted(SMALL))
def test_inference_matches_mxnet_operators(name, mxnet_python, tmp_path):
  model = models.build_backbone(name, embedding_size=64, **SMALL[name])
  _randomize(model)
  images = _images(seed=1)
  (tmp_path / "graph.json").write_text(json.dumps(_export_graph(model)))
  np.savez(tmp_path / "weights.npz",
           **{v.path: np.asarray(v.numpy()) for v in model.weights})
  np.save(tmp_path / "images.npy", images)
  (tmp_path / "forward.py").write_text(_MXNET_FORWARD)
  subprocess.run([mxnet_python, str(tmp_path / "forward.py"),
                  *(str(tmp_path / f) for f in ("graph.json", "weights.npz",
                                                "images.npy", "out.npy"))],
                 check=True, capture_output=True, timeout=300)
  expected = np.load(tmp_path / "out.npy")
  got = model(images, training=False).numpy()
  assert got.shape == expected.shape == (2, 64)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_keras_file_round_trip(name, tmp_path):
  model = models.build_backbone(name, embedding_size=32, dropout=0.2, **SMALL[name])
  _randomize(model)
  path = tmp_path / f"{name}.keras"
  model.save(path)
  loaded = keras.saving.load_model(path)
  images = _images(seed=2)
  np.testing.assert_allclose(loaded(images), model(images), atol=1e-6, rtol=0)
  assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
  assert loaded.get_layer("head_dropout").rate == 0.2


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_mixed_precision_embeddings_are_float32(name, policy):
  keras.mixed_precision.set_global_policy(policy)
  try:
    model = models.build_backbone(name, embedding_size=32, **SMALL[name])
    with tf.GradientTape() as tape:
      emb = model(_images(seed=3), training=True)
      loss = tf.reduce_sum(tf.square(emb))
    grads = tape.gradient(loss, model.trainable_variables)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
  assert emb.dtype == tf.float32
  assert model.get_layer("head_fc").compute_dtype == "float32"
  assert all(np.isfinite(g.numpy()).all() for g in grads)
  assert np.isfinite(emb.numpy()).all()
