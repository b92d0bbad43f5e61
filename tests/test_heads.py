"""Training heads: recipes, logits against numpy, float32 under mixed precision, save/load, learning."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfface import losses
from tfface import models

RNG = np.random.default_rng(0)
EMB = RNG.normal(size=(6, 16)).astype("float32")
LABELS = np.array([0, 3, 4, 1, 4, 2])


def _numpy_cosine(head):
  w = head.kernel.numpy()
  assert w.shape == (head.num_classes, EMB.shape[1])  # one row per class
  w = w / np.linalg.norm(w, axis=1, keepdims=True)
  x = EMB / np.linalg.norm(EMB, axis=1, keepdims=True)
  return x @ w.T


def _numpy_margin_logits(cosine, labels, s, m1, m2, m3):
  """The margin recipe from scratch in float64 (row by row, no tfface code).

  For m1 = 1 arcface_torch's fallback applies past pi: cos(theta) - sin(m2) * m2.
  """
  out = s * cosine.astype("float64")
  for i, label in enumerate(labels):
    c = float(cosine[i, label])
    theta = np.arccos(np.clip(c, -1.0, 1.0))
    target = np.cos(theta + m2) if theta + m2 < np.pi else c - np.sin(m2) * m2
    out[i, label] = s * (target - m3)
  return out


@pytest.mark.parametrize("loss, margins", [
    ("arcface", (1.0, 0.5, 0.0)), ("cosface", (1.0, 0.0, 0.35)),
    ("combined", (1.0, 0.3, 0.2)), ("ArcFace", (1.0, 0.5, 0.0))])
def test_margin_heads_apply_their_recipe(loss, margins):
  head = models.build_head(loss, 5, embedding_size=16)
  assert isinstance(head, models.MarginHead) and head.s == 64.0
  assert (head.m1, head.m2, head.m3) == margins
  cosine = _numpy_cosine(head)
  expected = _numpy_margin_logits(cosine, LABELS, 64.0, *margins)
  np.testing.assert_allclose(head(EMB, LABELS), expected, atol=2e-3)
  # Without labels: plain scaled cosines, for accuracy and inference.
  np.testing.assert_allclose(head(EMB), 64.0 * cosine, atol=1e-4)
  # Only the target column differs between the two.
  diff = np.abs(head(EMB, LABELS).numpy() - head(EMB).numpy()) > 1e-3
  assert (diff == (np.arange(5) == LABELS[:, None])).all()


def test_head_overrides_softmax_and_errors():
  head = models.build_head("arcface", 5, s=30.0, m2=0.4, easy_margin=True)
  assert (head.s, head.m2, head.easy_margin) == (30.0, 0.4, True)
  assert not head.built  # weights created on the first call
  assert head(EMB, LABELS).shape == (6, 5) and head.embedding_size == 16

  softmax = models.build_head("softmax", 5, embedding_size=16)
  softmax.bias.assign(np.arange(5, dtype="float32"))
  expected = EMB @ softmax.kernel.numpy().T + np.arange(5)
  np.testing.assert_allclose(softmax(EMB, LABELS), expected, atol=1e-5)
  np.testing.assert_allclose(softmax(EMB), expected, atol=1e-5)

  with pytest.raises(ValueError, match="Unknown head/loss 'sphereface2'"):
    models.build_head("sphereface2", 5)
  with pytest.raises(ValueError, match="num_classes"):
    models.build_head("cosface", 0)
  with pytest.raises(ValueError, match="embedding_size=8"):
    models.build_head("cosface", 5, embedding_size=8)(EMB, LABELS)


@pytest.mark.parametrize("loss", ["arcface", "combined", "softmax"])
def test_heads_are_float32_under_mixed_float16_and_finite_at_cos_one(loss):
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    head = models.build_head(loss, 6, embedding_size=16)
    # Class centres equal to the embeddings: target cosines are exactly 1.
    head.kernel.assign(EMB)
    emb16 = tf.constant(EMB, dtype="float16")
    with tf.GradientTape() as tape:
      tape.watch(emb16)
      logits = head(emb16, np.arange(6))
      loss_value = tf.reduce_mean(losses.softmax_cross_entropy(np.arange(6), logits))
    grads = tape.gradient(loss_value, [emb16, head.kernel])
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert head.compute_dtype == "float32" and head.kernel.dtype == "float32"
  assert logits.dtype == tf.float32 and loss_value.dtype == tf.float32
  assert np.isfinite(loss_value.numpy())
  assert all(np.isfinite(g.numpy()).all() for g in grads)


@pytest.mark.parametrize("loss", ["arcface", "cosface", "softmax"])
def test_head_keras_file_round_trip(loss, tmp_path):
  emb_in = keras.Input((16,), name="embeddings")
  label_in = keras.Input((), dtype="int32", name="labels")
  head = models.build_head(loss, 5, easy_margin=True) if loss == "arcface" else \
      models.build_head(loss, 5)
  model = keras.Model([emb_in, label_in], [head(emb_in, label_in), head(emb_in)])
  model.layers[-1].kernel.assign(RNG.normal(size=(5, 16)).astype("float32"))
  path = tmp_path / "head.keras"
  model.save(path)
  loaded = keras.saving.load_model(path)
  for got, want in zip(loaded([EMB, LABELS]), model([EMB, LABELS])):
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
  assert loaded.layers[-1].get_config() == head.get_config()


@pytest.mark.slow
def test_small_backbone_with_arcface_head_learns_the_classes():
  """Four noisy identities: ArcFace logits (margin included) become right."""
  num_classes, per_class = 4, 8
  rng = np.random.default_rng(1)
  prototypes = rng.integers(0, 256, (num_classes, 32, 32, 3))
  labels = np.repeat(np.arange(num_classes), per_class)
  images = np.clip(prototypes[labels] + rng.normal(0, 25, (len(labels), 32, 32, 3)),
                   0, 255).astype("float32")
  keras.utils.set_random_seed(0)
  backbone = models.build_backbone(
      "r18", embedding_size=32, input_shape=(32, 32, 3), units=(1, 1, 1, 1),
      widths=(8, 16, 32, 64), stem_width=8)
  head = models.build_head("arcface", num_classes, embedding_size=32)
  optimizer = keras.optimizers.SGD(0.03, momentum=0.9)
  variables = backbone.trainable_variables + head.trainable_variables
  decayed = losses.weight_decay_variables(backbone, head)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      logits = head(backbone(x, training=True), y)
      cross_entropy = tf.reduce_mean(losses.softmax_cross_entropy(y, logits))
      loss = cross_entropy + losses.l2_weight_decay(decayed, 5e-4)
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), y)
    return cross_entropy, tf.reduce_mean(tf.cast(correct, tf.float32))

  labels = labels.astype("int32")
  first, first_accuracy = step(images, labels)
  for _ in range(15):
    last, accuracy = step(images, labels)
  # With s = 64 and m = 0.5 the margin logits start far off (CE ~ 48).
  assert float(first) > 10.0 and float(first_accuracy) < 0.5
  assert float(last) < 0.1 and float(accuracy) == 1.0
  predicted = np.argmax(head(backbone(images, training=False)), axis=1)
  assert (predicted == labels).mean() == 1.0
