"""The embedded synthetic face dataset: `make demo` trains and verifies on it.

`generate` writes, in the InsightFace layout, `train.rec`, `train.idx`,
`property` and a verification file `synth_val.bin` whose pairs come from
identities that are not in the training set (half same, half different, in
10 consecutive equal folds like LFW). Every image is drawn by
`synthetic_faces`; randomness is keyed by `(seed, identity, image)`, so the
output is byte-identical for a seed and an identity looks the same whatever
the other sizes are.
"""
import dataclasses
import os
import time

import numpy as np

from tfface import atomic
from tfface import progress as progress_lib
from tfface.data.insightface import rec_writer
from tfface.data.insightface import verification_bin
from tfface.data.synthetic import faces as synthetic_faces

NUM_FOLDS = 10
VAL_NAME = "synth_val.bin"
# Streams of the per-seed random generators, so identities, photos and pair
# choices never share random numbers.
_IDENTITY_STREAM, _PHOTO_STREAM, _PAIR_STREAM = 0, 1, 2


@dataclasses.dataclass
class SyntheticSummary:
  """What `generate` wrote."""

  output_dir: str
  num_identities: int
  num_images: int
  num_val_identities: int
  num_val_images: int
  num_pairs: int
  seconds: float

  def __str__(self):
    return (f"{self.output_dir}: {self.num_images} training images of "
            f"{self.num_identities} identities; {VAL_NAME} with {self.num_pairs} pairs "
            f"({self.num_val_images} images) from {self.num_val_identities} other "
            f"identities; {self.seconds:.1f} s")


class _Faces:
  """Renders (and caches the identity of) photos keyed by (identity, image)."""

  def __init__(self, seed):
    self.seed = seed
    self._identities = {}

  def identity(self, person):
    if person not in self._identities:
      rng = np.random.default_rng([self.seed, _IDENTITY_STREAM, person])
      self._identities[person] = synthetic_faces.sample_identity(rng)
    return self._identities[person]

  def jpeg(self, person, image):
    rng = np.random.default_rng([self.seed, _PHOTO_STREAM, person, image])
    return synthetic_faces.encode(synthetic_faces.render(self.identity(person), rng))


def make_pairs(num_pairs, num_identities, images_per_identity, rng):
  """LFW-style pairs: 10 folds, each half same then half different.

  Returns:
    `(pairs, issame)`: `pairs[i] = ((person, image), (person, image))` with
    persons in `[0, num_identities)`.
  """
  per_fold = num_pairs // NUM_FOLDS
  pairs, issame = [], []
  for _ in range(NUM_FOLDS):
    for same in (True, False):
      for _ in range(per_fold // 2):
        if same:
          person = int(rng.integers(num_identities))
          a, b = rng.choice(images_per_identity, 2, replace=False)
          pairs.append(((person, int(a)), (person, int(b))))
        else:
          p, q = rng.choice(num_identities, 2, replace=False)
          pairs.append(((int(p), int(rng.integers(images_per_identity))),
                        (int(q), int(rng.integers(images_per_identity)))))
        issame.append(same)
  return pairs, issame


def generate(output_dir: str, num_identities: int = 300, images_per_identity: int = 30,
             num_pairs: int = 1200, seed: int = 0, num_val_identities: int = 100,
             val_images_per_identity: int = 10, progress: bool = False,
             overwrite: bool = False) -> SyntheticSummary:
  """Writes the synthetic dataset into `output_dir`.

  The four files are written into a temporary directory beside `output_dir`
  and moved into it once all are complete: a failure leaves nothing, and a
  directory that already holds files (a real dataset, perhaps) is refused
  unless `overwrite`.

  Args:
    output_dir: directory for `train.rec`, `train.idx`, `property`, `synth_val.bin`.
    num_identities: training identities (labels `0..num_identities-1`).
    images_per_identity: training images per identity.
    num_pairs: verification pairs; a multiple of 20 (10 folds, half same).
    seed: everything is a deterministic function of it.
    num_val_identities: identities (disjoint from training) the pairs use.
    val_images_per_identity: distinct photos each verification identity has.
    progress: show training images drawn, rate and ETA on stderr.
    overwrite: write into a non-empty `output_dir`: the four files replace
      theirs, other files there stay.

  Returns:
    A `SyntheticSummary`.

  Raises:
    ValueError: sizes that cannot make the requested dataset, or a non-empty
      `output_dir` without `overwrite` (before anything is written).
  """
  if num_identities < 1 or images_per_identity < 1:
    raise ValueError(f"need at least one identity and image; got num_identities="
                     f"{num_identities}, images_per_identity={images_per_identity}")
  if num_pairs < 2 * NUM_FOLDS or num_pairs % (2 * NUM_FOLDS):
    raise ValueError(f"num_pairs must be a positive multiple of {2 * NUM_FOLDS} (10 folds, "
                     f"half same, half different); got {num_pairs}")
  if num_val_identities < 2 or val_images_per_identity < 2:
    raise ValueError(f"verification pairs need >= 2 identities with >= 2 images each; got "
                     f"{num_val_identities} identities x {val_images_per_identity} images")
  with atomic.replacing_dir(output_dir, overwrite=overwrite, merge=True) as tmp:
    start = time.time()
    faces = _Faces(seed)
    total = num_identities * images_per_identity
    with rec_writer.InsightFaceWriter(tmp) as writer, progress_lib.progress(
        total=total, desc="make_synthetic", unit="images", disable=not progress) as bar:
      for person in range(num_identities):
        for image in range(images_per_identity):
          writer.add(person, faces.jpeg(person, image))
        bar.update(images_per_identity)

    # Verification identities follow the training ones: never seen in training.
    rng = np.random.default_rng([seed, _PAIR_STREAM])
    pairs, issame = make_pairs(num_pairs, num_val_identities, val_images_per_identity, rng)
    cache = {}
    images = []
    for pair in pairs:
      for person, image in pair:
        key = (num_identities + person, image)
        if key not in cache:
          cache[key] = faces.jpeg(*key)
        images.append(cache[key])
    verification_bin.write_bin(os.path.join(tmp, VAL_NAME), images, issame)
    return SyntheticSummary(output_dir, num_identities, total, num_val_identities,
                            len(cache), num_pairs, time.time() - start)
