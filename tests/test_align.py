"""Face alignment: the similarity transform on synthetic landmarks, MTCNN on a real photo."""
import os

import cv2
import numpy as np
import pytest

from conftest import run_tool
from tfface.align import transform
from tfface.align import folder


def _random_similarity(rng):
  angle = rng.uniform(-0.6, 0.6)
  scale = rng.uniform(0.4, 3.0)
  c, s = np.cos(angle) * scale, np.sin(angle) * scale
  return np.array([[c, -s, rng.uniform(-50, 300)], [s, c, rng.uniform(-50, 300)]])


@pytest.mark.parametrize("seed", range(5))
def test_landmarks_land_on_template(seed):
  rng = np.random.default_rng(seed)
  # Landmarks of a face placed by a random similarity in a photo, plus 1 px
  # of detector noise: aligning must bring them back onto the template.
  forward = _random_similarity(rng)
  inverse = cv2.invertAffineTransform(forward)
  landmarks = transform.transform_points(inverse, transform.ARCFACE_DST)
  landmarks += rng.normal(scale=0.3, size=landmarks.shape)
  matrix = transform.estimate_norm(landmarks)
  warped = transform.transform_points(matrix, landmarks)
  assert np.abs(warped - transform.ARCFACE_DST).max() < 0.5 * 3  # noise bound
  exact = transform.estimate_norm(transform.transform_points(inverse, transform.ARCFACE_DST))
  np.testing.assert_allclose(exact, forward, atol=1e-9)


def test_matches_opencv_and_has_no_reflection():
  rng = np.random.default_rng(1)
  src = transform.ARCFACE_DST * 2.3 + rng.normal(scale=2.0, size=(5, 2)) + 40
  ours = transform.estimate_norm(src)
  cv, _ = cv2.estimateAffinePartial2D(src, transform.ARCFACE_DST, method=cv2.LMEDS)
  # Both least-squares similarity fits (LMEDS with five clean points keeps all).
  assert np.abs(transform.transform_points(ours, src)
                - transform.transform_points(cv, src)).max() < 0.5
  # A mirrored face must not be un-mirrored: determinant stays positive.
  mirrored = src * np.array([-1.0, 1.0])
  assert np.linalg.det(transform.estimate_norm(mirrored)[:, :2]) > 0


def test_warp_face_pixels():
  # A photo with a bright dot at each landmark: after warping, the dots sit on
  # the template positions.
  angle, scale = 0.4, 1.7  # a tilted face, larger than the template
  rotation = scale * np.array([[np.cos(angle), -np.sin(angle)],
                               [np.sin(angle), np.cos(angle)]])
  landmarks = (transform.ARCFACE_DST - 56) @ rotation.T + 250
  photo = np.zeros((500, 500, 3), np.uint8)
  for x, y in landmarks:
    cv2.circle(photo, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
  face = transform.warp_face(photo, landmarks)
  assert face.shape == (112, 112, 3)
  for x, y in transform.ARCFACE_DST:
    assert face[int(round(y)), int(round(x))].max() > 100
  assert transform.template(224)[0, 0] == pytest.approx(2 * 38.2946)
  with pytest.raises(ValueError, match="5 \\(x, y\\) landmarks"):
    transform.estimate_norm(np.zeros((4, 2)))


@pytest.fixture(scope="module")
def astronaut():
  skimage_data = pytest.importorskip("skimage.data")
  return skimage_data.astronaut()


@pytest.mark.slow
def test_mtcnn_on_astronaut(astronaut):
  pytest.importorskip("mtcnn")
  from tfface.align import detector
  faces = detector.FaceDetector().detect(astronaut)
  assert len(faces) == 1
  face = faces[0]
  x, y, w, h = face.box
  # Eileen Collins' face is in the upper middle of the 512x512 portrait.
  assert 150 < x < 230 and 40 < y < 110 and 60 < w < 130 and 80 < h < 140
  left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
  assert left_eye[0] < nose[0] < right_eye[0]
  assert mouth_left[0] < mouth_right[0]
  assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
  for px, py in face.landmarks:
    assert x <= px <= x + w and y <= py <= y + h
  aligned = detector.FaceAligner(detector=detector.FaceDetector()).align(astronaut)
  assert aligned.image.shape == (112, 112, 3)
  warped = transform.transform_points(transform.estimate_norm(face.landmarks),
                                      face.landmarks)
  # MTCNN's integer landmarks of a real face fit the template within a few px.
  assert np.abs(warped - transform.ARCFACE_DST).max() < 6


@pytest.mark.slow
def test_align_faces_tool(astronaut, tmp_path):
  pytest.importorskip("mtcnn")
  raw = tmp_path / "raw"
  (raw / "eileen").mkdir(parents=True)
  (raw / "nobody").mkdir()
  bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
  cv2.imwrite(str(raw / "eileen" / "portrait.jpg"), bgr)
  # Two astronauts side by side: two faces, the larger (right) one kept.
  small = np.zeros_like(bgr)
  small[128:384, 128:384] = cv2.resize(bgr, (256, 256))
  pair = np.concatenate([small, bgr], axis=1)
  cv2.imwrite(str(raw / "eileen" / "twice.png"), pair)
  cv2.imwrite(str(raw / "nobody" / "grey.jpg"), np.full((200, 200, 3), 128, np.uint8))
  (raw / "nobody" / "broken.jpg").write_bytes(b"not a jpeg")
  out = tmp_path / "aligned"
  proc = run_tool("align_faces", f"--input_dir={raw}", f"--output_dir={out}")
  assert "aligned 2 images" in proc.stdout
  assert "no face (skipped): 1: nobody/grey.jpg" in proc.stdout
  assert "several faces (largest kept): 1: eileen/twice.png" in proc.stdout
  assert "unreadable (skipped): 1: nobody/broken.jpg" in proc.stdout
  assert sorted(folder.list_images(out)) == ["eileen/portrait.jpg", "eileen/twice.png"]
  crop = cv2.imread(str(out / "eileen" / "portrait.jpg"))
  same = cv2.imread(str(out / "eileen" / "twice.png"))
  assert crop.shape == same.shape == (112, 112, 3)
  # Both crops show the same face at the same place.
  assert np.abs(crop.astype(int) - same.astype(int)).mean() < 25
  assert not [n for n in os.listdir(out / "eileen") if ".tmp" in n]
