"""A synthetic set in InsightFace's IJB layout, for testing and demonstrating IJB.

`generate_ijb` draws identities with the renderer of the synthetic training
set (`faces`, on other random streams, so none of them is a training
identity) and writes, like IJB-B/C:

* templates: each identity has `templates_per_identity` templates; the first
  is its enrolment ("gallery") template, the others are probes;
* media: a template holds 1..`max_media_per_template` media (a photo or a
  video); the frames of one media (1..`max_frames_per_media`) show the same
  rendered face placed differently, as consecutive video frames would;
* loose crops: each 112x112 face is scaled (x1.0-1.8), rotated (+-20
  degrees) and shifted into a larger crop (4-48 pixels of margin on each
  side, filled by reflection), JPEG q95 via OpenCV;
* landmarks: the true five points, i.e. the ArcFace template points (where
  the renderer puts the features, as in the training set) mapped into the
  crop, so that aligning a crop with them gives back the rendered face; a
  detector score in [0.5, 1);
* pairs: every gallery template against every probe template, gallery
  major (IJB-C's pairs are enrolment x verification templates too): one
  genuine pair per probe, the rest impostors.

Everything is a deterministic function of `seed` (and the sizes): the same
arguments write byte-identical files.
"""
import dataclasses
import os
import time

import cv2
import numpy as np

from tfface import atomic
from tfface.align import transform
from tfface.data.insightface import ijb_meta
from tfface.data.synthetic import faces as synthetic_faces

# Random streams, apart from the training set's (0, 1, 2): other people.
_IDENTITY_STREAM, _MEDIA_STREAM, _PLACEMENT_STREAM, _LAYOUT_STREAM = 100, 101, 102, 103
SCALE_RANGE = (1.0, 1.8)
MAX_ROLL_DEGREES = 20.0
MARGIN_RANGE = (4.0, 48.0)
DETECTOR_SCORE_RANGE = (0.5, 1.0)


@dataclasses.dataclass
class SyntheticIJBSummary:
  """What `generate_ijb` wrote."""

  output_dir: str
  target: str
  num_identities: int
  num_templates: int
  num_media: int
  num_images: int
  num_genuine: int
  num_impostor: int
  seconds: float

  def __str__(self):
    return (f"{self.output_dir}: {self.target} layout, {self.num_images} loose crops in "
            f"{self.num_media} media, {self.num_templates} templates of "
            f"{self.num_identities} identities; {self.num_genuine} genuine and "
            f"{self.num_impostor} impostor template pairs; {self.seconds:.1f} s")


def place_face(face, rng):
  """Scales, rotates and shifts a 112x112 face into a larger loose crop.

  Args:
    face: [112, 112, 3] uint8.
    rng: a `np.random.Generator`.

  Returns:
    `(crop, landmarks)`: the uint8 crop and the template's five points in it,
    float64 [5, 2].
  """
  size = synthetic_faces.SIZE
  matrix = cv2.getRotationMatrix2D((size / 2, size / 2),
                                   rng.uniform(-MAX_ROLL_DEGREES, MAX_ROLL_DEGREES),
                                   rng.uniform(*SCALE_RANGE))
  corners = transform.transform_points(matrix, [[0, 0], [size, 0], [0, size], [size, size]])
  left, top, right, bottom = rng.uniform(*MARGIN_RANGE, 4)
  matrix[:, 2] += (left, top) - corners.min(0)
  width, height = np.ceil(corners.max(0) - corners.min(0) + (left + right, top + bottom))
  crop = cv2.warpAffine(face, matrix, (int(width), int(height)), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT101)
  return crop, transform.transform_points(matrix, transform.ARCFACE_DST)


def _layout(seed, num_identities, templates_per_identity, max_media, max_frames):
  """(identity, template index, media index, frame count) of every media, in order."""
  rng = np.random.default_rng([seed, _LAYOUT_STREAM])
  media = []
  for person in range(num_identities):
    for template in range(templates_per_identity):
      for m in range(int(rng.integers(1, max_media + 1))):
        media.append((person, template, m, int(rng.integers(1, max_frames + 1))))
  return media


def _pairs(num_identities, templates_per_identity):
  """Gallery x probe template pairs (ids from 1, identity-major) and labels."""
  template_id = lambda person, t: 1 + person * templates_per_identity + t
  pairs, labels = [], []
  for gallery in range(num_identities):
    for person in range(num_identities):
      for t in range(1, templates_per_identity):
        pairs.append((template_id(gallery, 0), template_id(person, t)))
        labels.append(int(gallery == person))
  return np.array(pairs, np.int64).reshape(-1, 2), np.array(labels, np.int8)


def generate_ijb(output_dir: str, target: str = "IJBC", num_identities: int = 40,
                 templates_per_identity: int = 3, max_media_per_template: int = 3,
                 max_frames_per_media: int = 2, seed: int = 0,
                 progress=None, overwrite: bool = False) -> SyntheticIJBSummary:
  """Writes a synthetic IJB-format set into `output_dir`.

  The set is written into a temporary directory beside `output_dir`, which
  it becomes once complete: a failure leaves nothing, and a directory that
  already holds files is refused unless `overwrite` (then replaced whole).

  Args:
    output_dir: gets `loose_crop/` and `meta/`.
    target: "IJBC" or "IJBB": the prefix of the meta files.
    num_identities: people (at least 2).
    templates_per_identity: templates per person (at least 2: one gallery,
      the rest probes).
    max_media_per_template: each template has 1..this many media.
    max_frames_per_media: each media has 1..this many frames (images).
    seed: everything is a deterministic function of it.
    progress: optional callable `(done_images, total_images)`.
    overwrite: replace a non-empty `output_dir` (whole, once the new set is
      complete) instead of refusing it.

  Returns:
    A `SyntheticIJBSummary`.

  Raises:
    ValueError: sizes that cannot make genuine and impostor pairs, or a
      non-empty `output_dir` without `overwrite` (before anything is written).
  """
  ijb_meta.ijb_paths(output_dir, target)  # validates the target
  if num_identities < 2 or templates_per_identity < 2:
    raise ValueError("genuine and impostor pairs need >= 2 identities with >= 2 templates; "
                     f"got num_identities={num_identities}, "
                     f"templates_per_identity={templates_per_identity}")
  if max_media_per_template < 1 or max_frames_per_media < 1:
    raise ValueError(f"need >= 1 media per template and frame per media; got "
                     f"{max_media_per_template}, {max_frames_per_media}")
  with atomic.replacing_dir(output_dir, overwrite=overwrite) as tmp:
    start = time.time()
    media = _layout(seed, num_identities, templates_per_identity, max_media_per_template,
                    max_frames_per_media)
    total = sum(frames for *_, frames in media)
    identities = [synthetic_faces.sample_identity(
        np.random.default_rng([seed, _IDENTITY_STREAM, p])) for p in range(num_identities)]
    names, templates, medias, landmarks, scores = [], [], [], [], []
    image_dir = os.path.join(tmp, ijb_meta.IMAGE_DIR)
    os.makedirs(image_dir, exist_ok=True)
    for media_id, (person, template, m, frames) in enumerate(media, 1):
      face = synthetic_faces.render(
          identities[person], np.random.default_rng([seed, _MEDIA_STREAM, person, template, m]))
      for frame in range(frames):
        rng = np.random.default_rng([seed, _PLACEMENT_STREAM, person, template, m, frame])
        crop, points = place_face(face, rng)
        name = f"{len(names) + 1}.jpg"
        with open(os.path.join(image_dir, name), "wb") as f:  # the set appears whole
          f.write(synthetic_faces.encode(crop))
        names.append(name)
        templates.append(1 + person * templates_per_identity + template)
        medias.append(media_id)
        landmarks.append(points)
        scores.append(rng.uniform(*DETECTOR_SCORE_RANGE))
        if progress:
          progress(len(names), total)
    pairs, labels = _pairs(num_identities, templates_per_identity)
    ijb_meta.write_ijb_meta(tmp, target, names, templates, medias, landmarks, scores,
                            pairs, labels)
    return SyntheticIJBSummary(output_dir, target, num_identities,
                               num_identities * templates_per_identity, len(media), len(names),
                               int(labels.sum()), int(len(labels) - labels.sum()),
                               time.time() - start)
