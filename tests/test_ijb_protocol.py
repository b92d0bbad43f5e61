"""IJB protocol steps on hand-made cases, and the whole protocol against a loop oracle."""
import numpy as np
import pytest

import ijb_reference
from tfface.data.insightface import ijb_meta
from tfface.data.synthetic import ijb as synthetic_ijb
from tfface.evaluation.ijb import runner
from tfface.evaluation.ijb import tar_far
from tfface.evaluation.ijb import templates


# --- ROC and the TAR rule ----------------------------------------------------

def test_roc_curve_matches_scikit_learns_documented_example():
  fpr, tpr, thresholds = tar_far.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
  np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
  np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
  np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])


# Three tied (genuine, impostor) groups lie on one line in ROC space, so the
# middle one is dropped; FAR = 0.5 is then equally near 0.25 and 0.75.
_TIED_LABELS = [1, 0, 1, 0, 1, 0, 0, 1]
_TIED_SCORES = [0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.5]


def test_roc_curve_merges_ties_and_drops_collinear_points():
  fpr, tpr, thresholds = tar_far.roc_curve(_TIED_LABELS, _TIED_SCORES)
  np.testing.assert_array_equal(fpr, [0, 0.25, 0.75, 1, 1])
  np.testing.assert_array_equal(tpr, [0, 0.25, 0.75, 0.75, 1])
  np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.7, 0.6, 0.5])
  fpr, tpr, _ = tar_far.roc_curve(_TIED_LABELS, _TIED_SCORES, drop_intermediate=False)
  np.testing.assert_array_equal(fpr, [0, 0.25, 0.5, 0.75, 1, 1])
  np.testing.assert_array_equal(tpr, [0, 0.25, 0.5, 0.75, 0.75, 1])


def test_tar_at_far_takes_the_first_nearest_point_of_the_reversed_curve():
  fpr, tpr, _ = tar_far.roc_curve(_TIED_LABELS, _TIED_SCORES)
  # Reversed: fpr 1, 1, .75, .25, 0. 0.5 is .25 from both .75 and .25; the
  # first in reversed order (.75, TAR .75) wins. The last would give .25, and
  # without drop_intermediate the exact point .5 would give .5.
  assert tar_far.tar_at_far(fpr, tpr, fars=[0.5]) == {0.5: 0.75}
  assert tar_far.tar_at_far(fpr, tpr, fars=[0.9, 0.2, 0.1]) == {0.9: 1.0, 0.2: 0.25, 0.1: 0}


def test_tar_at_far_prefers_the_highest_tar_among_equal_fars_at_every_far():
  # Each target FAR appears twice with two TARs (a vertical step of the ROC);
  # InsightFace reverses the curve "to select the largest TPR at the same FPR".
  fpr = [0.0]
  tpr = [0.0]
  for k, far in enumerate(tar_far.FARS):
    fpr += [far, far]
    tpr += [0.1 * k + 0.02, 0.1 * k + 0.05]
  fpr, tpr = np.array(fpr + [1.0]), np.array(tpr + [1.0])
  expected = {far: pytest.approx(0.1 * k + 0.05) for k, far in enumerate(tar_far.FARS)}
  assert tar_far.tar_at_far(fpr, tpr) == expected
  assert list(tar_far.tar_at_far(fpr, tpr)) == [1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1]


def test_roc_and_tar_at_far_equal_the_loop_oracle_on_ties_heavy_scores():
  rng = np.random.default_rng(3)
  labels = (rng.random(3000) < 0.1).astype(np.int8)
  scores = np.round(rng.normal(labels * 0.8, 0.5), 2)  # many ties
  fpr, tpr, _ = tar_far.roc_curve(labels, scores)
  ref_fpr, ref_tpr = ijb_reference.roc(labels, scores)
  np.testing.assert_array_equal(fpr, ref_fpr)
  np.testing.assert_array_equal(tpr, ref_tpr)
  tar = tar_far.tar_at_far(fpr, tpr, [0.0004, 0.002, 0.05, 0.3])
  assert tar == ijb_reference.tar_at_far(labels, scores, [0.0004, 0.002, 0.05, 0.3])


def test_roc_curve_refuses_one_class_and_nan():
  with pytest.raises(ValueError, match="genuine and impostor"):
    tar_far.roc_curve([1, 1], [0.1, 0.2])
  with pytest.raises(ValueError, match="NaN"):
    tar_far.roc_curve([0, 1], [0.1, np.nan])


# --- Image features, pooling, scoring -------------------------------------------

def test_image_features_flip_norm_and_detector_switches():
  original = np.array([[1.0, 0.0], [0.0, 2.0]])
  flipped = np.array([[1.0, 2.0], [2.0, 0.0]])
  scores = np.array([0.5, 2.0])
  np.testing.assert_allclose(templates.image_features(original, flipped, scores),
                             [[1.0, 1.0], [4.0, 4.0]])
  np.testing.assert_allclose(templates.image_features(original), original)
  np.testing.assert_allclose(templates.image_features(original, flipped), [[2, 2], [2, 2]])
  # L2 per image comes before the detector weight: the norm is the score.
  unit = np.sqrt(0.5)
  np.testing.assert_allclose(
      templates.image_features(original, flipped, scores, norm_score=False),
      [[0.5 * unit, 0.5 * unit], [2 * unit, 2 * unit]], rtol=1e-6)


def test_pool_templates_averages_media_then_sums_and_normalises():
  # Template 7: media 1 = (1,0), (3,0) -> mean (2,0); media 2 = (0,2): sum (2,2).
  # Averaging all images would give (4/3, 2/3); summing all (4, 2).
  features = np.array([[0, 2], [1, 0], [0, -5], [3, 0], [0, 0]], np.float32)
  template_ids = np.array([7, 7, 3, 7, 9])
  medias = np.array([2, 1, 5, 1, 6])
  ids, pooled = templates.pool_templates(features, template_ids, medias)
  np.testing.assert_array_equal(ids, [3, 7, 9])
  np.testing.assert_allclose(pooled, [[0, -1], [np.sqrt(0.5), np.sqrt(0.5)], [0, 0]],
                             rtol=1e-6)


def test_pool_templates_in_chunks_equals_the_loop(monkeypatch):
  rng = np.random.default_rng(1)
  template_ids = rng.integers(0, 60, 700) * 3 + 1
  medias = rng.integers(0, 4, 700)
  features = rng.standard_normal((700, 8)).astype(np.float32)
  monkeypatch.setattr(templates, "_POOL_CHUNK", 50)  # many chunks of whole templates
  ids, pooled = templates.pool_templates(features, template_ids, medias)
  for row, template in enumerate(ids):
    total = 0
    for media in np.unique(medias[template_ids == template]):
      total = total + features[(template_ids == template) & (medias == media)].mean(0)
    np.testing.assert_allclose(pooled[row], total / np.linalg.norm(total), atol=1e-6)


@pytest.mark.parametrize("mode", ["dense", "dense_blocks", "gather"])
def test_score_pairs_dot_products(mode, monkeypatch):
  rng = np.random.default_rng(2)
  ids = np.arange(40) * 5 + 2
  features = rng.standard_normal((40, 16)).astype(np.float32)
  # Gallery x probe structure (dense) or all-random pairs (sparse).
  pairs = np.stack([rng.choice(ids[:8], 300), rng.choice(ids[8:], 300)], axis=1)
  block_bytes = templates.BLOCK_BYTES
  monkeypatch.setattr(templates, "_PAIR_CHUNK", 64)  # several chunks of pairs
  if mode == "dense_blocks":
    block_bytes = 3 * 32 * 4  # three first templates per block
  if mode == "gather":
    monkeypatch.setattr(templates, "GATHER_COST", 0)
  scores = templates.score_pairs(ids, features, pairs, block_bytes=block_bytes)
  expected = [features[(a - 2) // 5].astype(np.float64) @ features[(b - 2) // 5]
              for a, b in pairs]
  np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_score_pairs_names_a_template_without_features(monkeypatch):
  monkeypatch.setattr(templates, "_PAIR_CHUNK", 2)
  with pytest.raises(ValueError, match="template 4 .pair 4. has no features"):
    templates.score_pairs(np.array([1, 2]), np.eye(2), [[1, 2], [2, 1], [1, 1], [4, 1]])
  with pytest.raises(ValueError, match="template 10000000 .pair 1."):  # the binary search
    templates.score_pairs(np.array([1, 10 ** 9]), np.eye(2), [[10 ** 7, 1]])


# --- The whole protocol on the synthetic set -------------------------------------

@pytest.fixture(scope="module")
def ijb_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("ijb")
  synthetic_ijb.generate_ijb(str(path), num_identities=12, templates_per_identity=3)
  return path


@pytest.mark.parametrize("flip,detector,norm", [(True, True, True), (False, False, False)])
def test_whole_protocol_equals_the_loop_oracle(ijb_dir, flip, detector, norm):
  model = ijb_reference.PixelModel()
  meta = ijb_meta.read_ijb_meta(str(ijb_dir), "IJBC")
  result = runner.run_protocol(model, meta, batch_size=16, flip_test=flip,
                               detector_score=detector, norm_score=norm, verbose=False,
                               echo=lambda line: None)
  faces = ijb_reference.aligned_faces(str(ijb_dir), "IJBC")
  features = ijb_reference.image_features(faces, model.embed_one, flip, detector, norm)
  scores, labels, num_templates = ijb_reference.template_scores(str(ijb_dir), "IJBC",
                                                                features)
  np.testing.assert_allclose(result.scores, scores, atol=1e-5)
  assert list(result.tar_at_far.values()) == list(
      ijb_reference.tar_at_far(labels, scores).values())
  assert (result.num_templates, result.num_pairs) == (num_templates, len(labels))
  # Negative control: without media pooling (every image its own media) the
  # scores move by far more than the tolerance.
  unpooled = templates.pool_templates(
      templates.image_features(*faces_embeddings(model, faces, flip)), meta.templates,
      np.arange(meta.num_images))
  moved = templates.score_pairs(*unpooled, meta.pairs)
  assert np.abs(moved - scores).max() > 1e-2


def faces_embeddings(model, faces, flip):
  original = np.stack([model.embed_one(face) for face, _ in faces])
  flipped = np.stack([model.embed_one(np.fliplr(face).copy()) for face, _ in faces])
  return original, (flipped if flip else None)
