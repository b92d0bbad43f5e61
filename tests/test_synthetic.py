"""The embedded synthetic dataset: layout, determinism, pairs, and not-trivial faces."""
import hashlib

import cv2
import numpy as np
import pytest

from tfface.data.insightface import rec as insightface_rec
from tfface.data.synthetic import dataset as synthetic
from tfface.data.insightface import verification_bin

SMALL = dict(num_identities=5, images_per_identity=4, num_pairs=40, num_val_identities=4,
             val_images_per_identity=3)
FILES = ("train.rec", "train.idx", "property", "synth_val.bin")


def _digests(directory):
  return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in FILES}


def test_layout_and_determinism(tmp_path):
  summary = synthetic.generate(str(tmp_path / "a"), seed=7, **SMALL)
  synthetic.generate(str(tmp_path / "b"), seed=7, **SMALL)
  synthetic.generate(str(tmp_path / "c"), seed=8, **SMALL)
  assert _digests(tmp_path / "a") == _digests(tmp_path / "b")  # same bytes twice
  assert _digests(tmp_path / "a")["train.rec"] != _digests(tmp_path / "c")["train.rec"]
  assert (summary.num_images, summary.num_pairs) == (20, 40)
  with insightface_rec.InsightFaceRec(str(tmp_path / "a")) as rec:
    assert rec.has_header and rec.num_images == 20 and rec.num_classes == 5
    assert rec.labels().tolist() == [i // 4 for i in range(20)]
    label, jpeg = rec.read(1)
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)
  vbin = verification_bin.load_bin(str(tmp_path / "a" / "synth_val.bin"))
  assert vbin.num_pairs == 40 and len(vbin.images) == 80
  # 10 folds of 4 pairs: 2 same then 2 different, like LFW's pairs.txt.
  assert vbin.issame.reshape(10, 4).tolist() == [[True, True, False, False]] * 10


def test_identity_does_not_depend_on_dataset_size(tmp_path):
  synthetic.generate(str(tmp_path / "a"), **SMALL)
  synthetic.generate(str(tmp_path / "b"), **dict(SMALL, num_identities=6, images_per_identity=2))
  with insightface_rec.InsightFaceRec(str(tmp_path / "a")) as a, \
       insightface_rec.InsightFaceRec(str(tmp_path / "b")) as b:
    assert a.read(5) == b.read(3)  # identity 1, image 0 in both


def test_pairs_come_from_distinct_identities_and_images():
  pairs, issame = synthetic.make_pairs(200, 7, 3, np.random.default_rng(0))
  assert len(pairs) == 200 and sum(issame) == 100
  for ((p, i), (q, j)), same in zip(pairs, issame):
    assert 0 <= p < 7 and 0 <= q < 7
    assert (p == q and i != j) if same else p != q


def test_bad_sizes_are_refused(tmp_path):
  with pytest.raises(ValueError, match="multiple of 20"):
    synthetic.generate(str(tmp_path), num_pairs=30)
  with pytest.raises(ValueError, match=">= 2 identities"):
    synthetic.generate(str(tmp_path), num_val_identities=1)


@pytest.mark.slow
def test_faces_are_not_trivially_separable_by_pixels(tmp_path):
  # Raw-pixel verification must stay near chance: identity lives in geometry,
  # not in a colour a random network could read off.
  synthetic.generate(str(tmp_path), num_identities=2, images_per_identity=2, num_pairs=400,
                     num_val_identities=40, val_images_per_identity=5)
  vbin = verification_bin.load_bin(str(tmp_path / "synth_val.bin"))
  pixels = np.stack([cv2.resize(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
                                (32, 32)).reshape(-1) for b in vbin.images]).astype(np.float32)
  pixels -= pixels.mean(0)
  pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
  distance = ((pixels[0::2] - pixels[1::2]) ** 2).sum(1)
  best = max(((distance < t) == vbin.issame).mean() for t in np.arange(0, 4, 0.01))
  assert 0.5 <= best < 0.75
