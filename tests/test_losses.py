"""Margin arithmetic, cross-entropy and triplet loss against hand-computed values."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfface import losses

COS = np.array([[0.8, 0.3, -0.2],
                [0.1, -0.95, 0.5],
                [0.2, 0.4, -0.99]], dtype="float32")
LABELS = np.array([0, 1, 2])


def _arc(cos, m):
  """cos(acos(c) + m) by the angle-sum identity, independent of acos."""
  return cos * math.cos(m) - math.sqrt(1.0 - cos * cos) * math.sin(m)


def _expected(targets):
  """64 * COS with the given target values put on the diagonal."""
  out = 64.0 * COS.astype("float64")
  for i, t in enumerate(targets):
    out[i, LABELS[i]] = 64.0 * t
  return out


def _logits(**kwargs):
  return losses.combined_margin_logits(COS, LABELS, **kwargs).numpy()


def test_arcface_including_theta_plus_m_beyond_pi():
  # -0.95 and -0.99 lie below th = cos(pi - 0.5) = -0.8776: the fallback
  # cos - mm with mm = sin(pi - 0.5) * 0.5 = 0.23971.
  mm = math.sin(0.5) * 0.5
  expected = _expected([_arc(0.8, 0.5), -0.95 - mm, -0.99 - mm])
  np.testing.assert_allclose(_logits(m2=0.5), expected, atol=1e-4)
  # Literal values: 64 * 0.414411 and 64 * (-0.95 - 0.239713).
  assert _logits(m2=0.5)[0, 0] == pytest.approx(26.52229, abs=1e-4)
  assert _logits(m2=0.5)[1, 1] == pytest.approx(-76.14161, abs=1e-4)


def test_cosface():
  expected = _expected([0.8 - 0.35, -0.95 - 0.35, -0.99 - 0.35])
  np.testing.assert_allclose(_logits(m2=0.0, m3=0.35), expected, atol=1e-4)
  assert _logits(m2=0.0, m3=0.35)[0, 0] == pytest.approx(28.8, abs=1e-4)


def test_combined_margin_both_sides_of_the_threshold():
  # th = cos(pi - 0.3) = -0.95534: -0.95 keeps cos(theta + 0.3), -0.99 falls back.
  mm = math.sin(0.3) * 0.3
  expected = _expected([_arc(0.8, 0.3) - 0.2, _arc(-0.95, 0.3) - 0.2,
                        -0.99 - mm - 0.2])
  np.testing.assert_allclose(_logits(m1=1.0, m2=0.3, m3=0.2), expected, atol=1e-4)


def test_multiplicative_margin_and_easy_margin_and_negative_labels():
  # m1 = 2: cos(2 theta) = 2 c^2 - 1 while 2 theta < pi.
  got = losses.combined_margin_logits(COS[:1], LABELS[:1], s=1.0, m1=2.0,
                                      m2=0.0).numpy()
  np.testing.assert_allclose(got[0], [2 * 0.64 - 1, 0.3, -0.2], atol=1e-6)
  # easy_margin: only positive target cosines get the margin.
  expected = _expected([_arc(0.8, 0.5), -0.95, -0.99])
  np.testing.assert_allclose(_logits(m2=0.5, easy_margin=True), expected, atol=1e-4)
  # A label of -1 (target not in this class shard) leaves the row alone.
  got = losses.combined_margin_logits(COS, np.array([0, -1, 2]), m2=0.5).numpy()
  np.testing.assert_allclose(got[1], 64.0 * COS[1], atol=1e-5)


@pytest.mark.parametrize("margins", [
    dict(m2=0.5), dict(m2=0.0, m3=0.35), dict(m2=0.3, m3=0.2),
    dict(m1=2.0, m2=0.0), dict(m2=0.5, easy_margin=True)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_loss_and_gradients_finite_at_cosine_plus_minus_one(margins, dtype):
  cosine = tf.constant([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5], [1.0, 1.0, -1.0]],
                       dtype=dtype)
  labels = tf.constant([0, 0, 2])
  with tf.GradientTape() as tape:
    tape.watch(cosine)
    logits = losses.combined_margin_logits(cosine, labels, **margins)
    loss = tf.reduce_mean(losses.softmax_cross_entropy(labels, logits))
  grad = tape.gradient(loss, cosine)
  assert logits.dtype == tf.float32 and loss.dtype == tf.float32
  assert np.isfinite(loss.numpy()) and np.isfinite(grad.numpy()).all()
  # At cos = 1 the ArcFace target is exactly cos(m2).
  if margins == dict(m2=0.5):
    assert logits.numpy()[0, 0] == pytest.approx(64 * math.cos(0.5), abs=1e-4)


def test_softmax_cross_entropy_matches_log_softmax_in_float32():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 30, (4, 7)).astype("float32")
  labels = np.array([0, 6, 3, 3])
  shifted = logits - logits.max(axis=1, keepdims=True)
  expected = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[range(4), labels]
  got = losses.softmax_cross_entropy(labels, logits)
  assert got.shape == (4,) and got.dtype == tf.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # float16 logits near the fp16 limit still give the float32 answer.
  big = np.array([[60000.0, -60000.0, 0.0]], dtype="float16")
  got16 = losses.softmax_cross_entropy(np.array([1]), tf.constant(big))
  assert got16.dtype == tf.float32 and got16.numpy()[0] == pytest.approx(120000.0)


def _circle(degrees):
  rad = np.deg2rad(np.asarray(degrees, dtype="float64"))
  return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype("float32")


def _d(a, b):
  """Squared distance between unit vectors at angles a and b (degrees)."""
  return 2.0 - 2.0 * math.cos(math.radians(a - b))


def test_triplet_batch_hard_on_a_hand_made_batch():
  labels = np.array([0, 0, 1, 1])
  emb = _circle([0, 60, 100, 180]) * np.array([[3.0], [0.5], [1.0], [7.0]], "float32")
  # Per anchor: hardest positive - hardest negative + 0.35, clipped at 0.
  expected = (max(_d(0, 60) - _d(0, 100) + 0.35, 0)
              + max(_d(60, 0) - _d(60, 100) + 0.35, 0)
              + max(_d(100, 180) - _d(100, 60) + 0.35, 0)
              + max(_d(180, 100) - _d(180, 60) + 0.35, 0)) / 4
  got = losses.triplet_loss(labels, emb, margin=0.35, mining="batch_hard")
  assert got.dtype == tf.float32
  assert float(got) == pytest.approx(expected, abs=1e-5)
  assert expected == pytest.approx(0.6042204, abs=1e-6)


def test_triplet_semi_hard_on_a_hand_made_batch():
  labels = np.array([0, 0, 1, 1])
  emb = _circle([0, 60, 100, 180])
  # Per (anchor, positive): the closest negative farther than the positive.
  expected = (max(_d(0, 60) - _d(0, 100) + 1.0, 0)
              + max(_d(60, 0) - _d(60, 180) + 1.0, 0)
              + max(_d(100, 180) - _d(100, 0) + 1.0, 0)
              + max(_d(180, 100) - _d(180, 60) + 1.0, 0)) / 4
  got = losses.triplet_loss(labels, emb, margin=1.0, mining="semi_hard")
  assert float(got) == pytest.approx(expected, abs=1e-5)
  assert expected == pytest.approx(0.0763518, abs=1e-6)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_triplet_without_farther_negative_and_singletons(mining):
  # Class 1 is a singleton (no positive: left out). For both pairs of class 0
  # every negative is closer than the positive, so semi-hard falls back to
  # the farthest negative, which is also the batch-hard choice here.
  labels = np.array([0, 0, 1])
  emb = _circle([0, 170, 20])
  expected = ((_d(0, 170) - _d(0, 20) + 0.35) + (_d(170, 0) - _d(170, 20) + 0.35)) / 2
  with tf.GradientTape() as tape:
    x = tf.constant(emb)
    tape.watch(x)
    got = losses.triplet_loss(labels, x, mining=mining)
  assert float(got) == pytest.approx(expected, abs=1e-5)
  assert np.isfinite(tape.gradient(got, x).numpy()).all()
  # A batch without any positive pair gives 0, not NaN.
  assert float(losses.triplet_loss(np.array([0, 1]), emb[:2], mining=mining)) == 0.0
  with pytest.raises(ValueError, match="mining"):
    losses.triplet_loss(labels, emb, mining="hardest")


def _sphereface_psi(cos, m1, m2, m3):
  """SphereFace's monotonic psi on phi = m1 * theta + m2, from scratch in float64."""
  phi = m1 * math.acos(min(max(cos, -1.0), 1.0)) + m2
  k = math.floor(phi / math.pi)
  return (-1.0) ** k * math.cos(phi) - 2.0 * k - m3


@pytest.mark.parametrize("m1, m2, m3", [(2.0, 0.0, 0.0), (4.0, 0.0, 0.0), (1.35, 0.0, 0.0),
                                        (2.0, 0.3, 0.2)])
def test_multiplicative_margin_is_monotonic_beyond_pi_over_m1(m1, m2, m3):
  # Worse samples (larger theta) must never get a higher target logit; at
  # m1 = 2 the old fallback jumped from -1.0 at 89.9 degrees to -0.002 at 90.1.
  theta = np.linspace(0.0, math.pi, 3601)
  cos = np.cos(theta).astype("float32")[:, None]
  got = losses.combined_margin_logits(cos, np.zeros(len(cos), int), s=1.0, m1=m1, m2=m2,
                                      m3=m3).numpy()[:, 0]
  assert np.all(np.diff(got) <= 1e-4), got[np.argmax(np.diff(got))]
  expected = [_sphereface_psi(float(c), m1, m2, m3) for c in cos[:, 0]]
  np.testing.assert_allclose(got, expected, atol=2e-3)
  # Either side of 90 degrees at m1 = 2: both near -1, not a jump to 0.
  if (m1, m2, m3) == (2.0, 0.0, 0.0):
    near = losses.combined_margin_logits(
        np.cos(np.radians([[89.9], [90.1]])).astype("float32"), np.zeros(2, int), s=1.0,
        m1=2.0, m2=0.0).numpy()[:, 0]
    np.testing.assert_allclose(near, [-1.0, -1.0], atol=1e-3)
