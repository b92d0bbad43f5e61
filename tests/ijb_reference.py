"""A deliberately simple IJB evaluation, written from InsightFace's eval_ijbc.py.

The oracle of the IJB tests: plain Python loops, float64, one image, one
template, one media and one pair at a time, its own meta-file parsing, and
scikit-image's SimilarityTransform with InsightFace's float32 template for
the alignment (not tfface.align). The ROC is counted threshold by threshold
and thinned point by point. Slow, so only for small sets.
"""
import os

import cv2
import numpy as np
from skimage import transform as sk_transform

FARS = [10 ** -6, 10 ** -5, 10 ** -4, 10 ** -3, 10 ** -2, 10 ** -1]
# InsightFace's 96x112 template shifted by 8 pixels, in float32 as it has it.
_SRC = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                 [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float32)
_SRC[:, 0] += 8.0


def _lines(path):
  with open(path) as f:
    return [line.split() for line in f if line.strip()]


def aligned_faces(ijb_dir, target):
  """[(rgb 112x112 face, detector score)] in the order of the 5-point file."""
  out = []
  for fields in _lines(os.path.join(ijb_dir, "meta", f"{target.lower()}_name_5pts_score.txt")):
    img = cv2.imread(os.path.join(ijb_dir, "loose_crop", fields[0]))
    lmk = np.array([float(x) for x in fields[1:-1]], dtype=np.float32).reshape((5, 2))
    tform = sk_transform.SimilarityTransform.from_estimate(lmk, _SRC)
    warped = cv2.warpAffine(img, tform.params[0:2, :], (112, 112), borderValue=0.0)
    out.append((cv2.cvtColor(warped, cv2.COLOR_BGR2RGB), np.float32(fields[-1])))
  return out


def template_scores(ijb_dir, target, image_features):
  """Pair scores from per-image features (already flipped/normalised/weighted)."""
  meta = os.path.join(ijb_dir, "meta", target.lower())
  by_template = {}
  for row, fields in enumerate(_lines(f"{meta}_face_tid_mid.txt")):
    media = by_template.setdefault(int(fields[1]), {})
    media.setdefault(int(fields[2]), []).append(np.asarray(image_features[row], np.float64))
  template_features = {}
  for template, media in by_template.items():
    total = np.zeros_like(next(iter(media.values()))[0])
    for frames in media.values():
      total = total + sum(frames) / len(frames)
    norm = np.sqrt(np.sum(total ** 2))
    template_features[template] = total / norm if norm > 0 else total
  scores, labels = [], []
  for fields in _lines(f"{meta}_template_pair_label.txt"):
    a, b = template_features[int(fields[0])], template_features[int(fields[1])]
    scores.append(float(sum(x * y for x, y in zip(a, b))))
    labels.append(int(fields[2]))
  return np.array(scores), np.array(labels), len(template_features)


def image_features(faces, embed_one, flip=True, detector_score=True, norm_score=True):
  """Per-image features, one image at a time, in InsightFace's order of steps."""
  features = []
  for face, score in faces:
    feature = np.asarray(embed_one(face), np.float64)
    if flip:
      feature = feature + np.asarray(embed_one(np.fliplr(face).copy()), np.float64)
    if not norm_score:
      feature = feature / np.sqrt(np.sum(feature ** 2))
    if detector_score:
      feature = feature * float(score)
    features.append(feature)
  return features


def roc(labels, scores):
  """scikit-learn's roc_curve (drop_intermediate) by counting and a point-by-point pass."""
  labels, scores = np.asarray(labels), np.asarray(scores)
  points = []
  for threshold in sorted(set(scores.tolist()), reverse=True):
    accepted = labels[scores >= threshold]
    points.append((int(len(accepted) - accepted.sum()), int(accepted.sum())))  # (fp, tp)
  kept = [points[0]]
  for i in range(1, len(points) - 1):
    (f0, t0), (f1, t1), (f2, t2) = points[i - 1], points[i], points[i + 1]
    if f2 - 2 * f1 + f0 != 0 or t2 - 2 * t1 + t0 != 0:
      kept.append(points[i])
  if len(points) > 1:
    kept.append(points[-1])
  kept = [(0, 0)] + kept
  fpr = np.array([f for f, _ in kept], np.float64) / kept[-1][0]
  tpr = np.array([t for _, t in kept], np.float64) / kept[-1][1]
  return fpr, tpr


def tar_at_far(labels, scores, fars=FARS):
  """InsightFace's read-out loop over `roc`, verbatim in spirit."""
  fpr, tpr = roc(labels, scores)
  fpr, tpr = np.flipud(fpr), np.flipud(tpr)
  out = {}
  for far in fars:
    _, min_index = min(list(zip(abs(fpr - far), range(len(fpr)))))
    out[far] = float(tpr[min_index])
  return out


class PixelModel:
  """A fixed "model": a random projection of the 8x8 thumbnail (not mirror-symmetric).

  Continuous in the pixels (a float thumbnail): InsightFace's float32
  template moves an aligned pixel by one level here and there, and that
  must move the embedding by little.
  """

  image_size = (112, 112)

  def __init__(self):
    self.weights = np.random.default_rng(0).standard_normal((192, 24)) / 100

  def embed_one(self, face):
    thumb = cv2.resize(face.astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA)
    return (thumb.reshape(-1) - 110.0) @ self.weights

  def __call__(self, batch):
    return np.stack([self.embed_one(face) for face in batch]).astype(np.float32)
