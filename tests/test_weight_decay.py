"""Coupled (MXNet / PyTorch) weight decay: which variables, and one SGD-momentum step."""
import json
import subprocess
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface import losses
from tfface import models

LR, WD, MOMENTUM = 0.1, 5e-4 * 100, 0.9  # a large wd makes the effect visible


def test_weight_decay_variables_select_kernels_gamma_and_alpha():
  backbone = models.build_backbone("r18", embedding_size=16, units=(1, 1, 1, 1),
                                   widths=(4, 8, 8, 8), stem_width=4)
  head = models.build_head("arcface", 3, embedding_size=16)
  names = [v.path for v in losses.weight_decay_variables(backbone, head, head)]
  assert len(names) == len(set(names))  # each variable once
  assert {"stem_conv/kernel", "stem_bn/gamma", "stem_prelu/alpha",
          "stage1_unit1_shortcut_conv/kernel", "head_fc/kernel",
          "arcface_head/kernel"} <= set(names)
  leaves = {n.split("/")[-1] for n in names}
  assert leaves == {"kernel", "gamma", "alpha"}
  # head_features has no gamma (fixed at 1), so only its beta exists: not decayed.
  assert not any(n.startswith("head_features/") for n in names)
  skipped = {v.path.split("/")[-1] for v in backbone.weights} - leaves
  assert skipped == {"beta", "bias", "moving_mean", "moving_variance"}
  dw = models.build_backbone("m1", embedding_size=8, multiplier=0.125,
                             pairs=((16, 2),))
  assert "block1_dw_conv/kernel" in [v.path for v in losses.weight_decay_variables(dw)]


def test_l2_weight_decay_value_and_gradient():
  a = tf.Variable([[1.0, -2.0], [3.0, 0.5]])
  b = tf.Variable([4.0])
  with tf.GradientTape() as tape:
    value = losses.l2_weight_decay([a, b], 0.01)
  assert value.dtype == tf.float32
  assert float(value) == pytest.approx(0.005 * (1 + 4 + 9 + 0.25 + 16))
  ga, gb = tape.gradient(value, [a, b])
  np.testing.assert_allclose(ga, 0.01 * a.numpy(), rtol=1e-6)
  np.testing.assert_allclose(gb, 0.01 * b.numpy(), rtol=1e-6)


W0 = np.array([1.0, -2.0, 0.5], dtype="float32")
C = np.array([0.3, 0.1, -0.2], dtype="float32")  # data loss sum(C * w): grad C


def _keras_steps(coupled, steps=2):
  w = tf.Variable(W0)
  if coupled:
    opt = keras.optimizers.SGD(LR, momentum=MOMENTUM)
  else:
    opt = keras.optimizers.SGD(LR, momentum=MOMENTUM, weight_decay=WD)
  for _ in range(steps):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(C * w)
      if coupled:
        loss += losses.l2_weight_decay([w], WD)
    opt.apply_gradients([(tape.gradient(loss, w), w)])
  return w.numpy()


def _mxnet_style_steps(steps=2):
  """MXNet sgd_mom_update: mom = momentum*mom - lr*(grad + wd*w); w += mom."""
  w, mom = W0.astype("float64"), np.zeros(3)
  for _ in range(steps):
    mom = MOMENTUM * mom - LR * (C + WD * w)
    w = w + mom
  return w


def test_sgd_momentum_with_l2_term_is_the_coupled_update():
  np.testing.assert_allclose(_keras_steps(coupled=True), _mxnet_style_steps(),
                             rtol=1e-6)


def test_keras_weight_decay_argument_is_a_different_update():
  got = _keras_steps(coupled=False)
  # Keras 3 shrinks w by lr*wd*w outside the momentum buffer (decoupled).
  w, mom = W0.astype("float64"), np.zeros(3)
  for _ in range(2):
    w = w - LR * WD * w
    mom = MOMENTUM * mom - LR * C
    w = w + mom
  np.testing.assert_allclose(got, w, rtol=1e-6)
  # Same after one step from zero momentum, different from the second on.
  np.testing.assert_allclose(_keras_steps(False, 1), _keras_steps(True, 1), rtol=1e-6)
  assert np.abs(got - _mxnet_style_steps()).max() > 1e-4


_MXNET_SGD = textwrap.dedent("""
    import json, sys
    import numpy as np, mxnet as mx
    a = json.loads(sys.argv[1])
    opt = mx.optimizer.SGD(learning_rate=a["lr"], momentum=a["momentum"], wd=a["wd"])
    upd = mx.optimizer.get_updater(opt)
    w = mx.nd.array(a["w0"])
    for _ in range(a["steps"]):
      upd(0, mx.nd.array(a["grad"]), w)
    print(json.dumps(w.asnumpy().tolist()))
""")


@pytest.mark.mxnet
def test_coupled_update_matches_mxnet_sgd(mxnet_python):
  args = {"lr": LR, "momentum": MOMENTUM, "wd": WD, "w0": W0.tolist(),
          "grad": C.tolist(), "steps": 3}
  out = subprocess.run([mxnet_python, "-c", _MXNET_SGD, json.dumps(args)],
                       check=True, capture_output=True, text=True, timeout=120)
  mx_w = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
  np.testing.assert_allclose(_keras_steps(coupled=True, steps=3), mx_w, rtol=1e-5)
  assert np.abs(_keras_steps(coupled=False, steps=3) - mx_w).max() > 1e-4
