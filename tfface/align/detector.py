"""Five-landmark face detection with MTCNN, and the detect-then-warp aligner.

The `mtcnn` package (MIT licence, Keras weights inside the wheel, nothing
downloaded at run time) is an optional extra: `pip install 'tfface[align]'`.
It is imported on first use, so the rest of tfface works without it.
"""
import dataclasses

import numpy as np

from tfface.align import transform

# MTCNN's keypoint names in the template's order; its "left" is image left.
_KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass
class Face:
  """One detection: `box` is (x, y, width, height), `landmarks` [5, 2] (x, y)."""

  box: tuple
  confidence: float
  landmarks: np.ndarray

  @property
  def area(self):
    return float(self.box[2] * self.box[3])


def _load_mtcnn():
  try:
    from mtcnn import MTCNN  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("face detection needs the optional mtcnn package: "
                     "pip install 'tfface[align]'") from e
  return MTCNN


class FaceDetector:
  """MTCNN faces with five landmarks, largest first.

  Args:
    min_confidence: drop detections below this score (MTCNN's ONet score).
    min_face_size: smallest face side in pixels MTCNN searches for.
  """

  def __init__(self, min_confidence=0.9, min_face_size=20):
    self.min_confidence = float(min_confidence)
    self.min_face_size = int(min_face_size)
    self._mtcnn = None

  def detect(self, image_rgb):
    """Detects faces in an RGB uint8 [H, W, 3] image.

    Returns:
      A list of `Face`, largest box first.
    """
    if self._mtcnn is None:
      self._mtcnn = _load_mtcnn()()
    image_rgb = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    found = self._mtcnn.detect_faces(image_rgb, min_face_size=self.min_face_size)
    faces = []
    for item in found:
      if float(item["confidence"]) < self.min_confidence:
        continue
      points = np.array([item["keypoints"][k] for k in _KEYPOINTS], dtype=np.float64)
      faces.append(Face(tuple(int(v) for v in item["box"]), float(item["confidence"]),
                        points))
    return sorted(faces, key=lambda f: f.area, reverse=True)


@dataclasses.dataclass
class AlignedFace:
  """The aligned crop (None without a face) and every face that was found."""

  image: np.ndarray
  faces: list


class FaceAligner:
  """Detects faces and warps the largest onto the ArcFace template.

  Args:
    image_size: side of the aligned crop.
    detector: anything with `detect(image_rgb) -> list[Face]`, largest first;
      defaults to `FaceDetector()`.
  """

  def __init__(self, image_size=112, detector=None):
    self.image_size = int(image_size)
    self.detector = detector or FaceDetector()

  def align(self, image_rgb):
    """Aligns the largest face of an RGB image.

    Returns:
      An `AlignedFace`; `image` is uint8 [size, size, 3] RGB, or None when no
      face was found. `faces` lists all detections so callers can report
      photos with several faces.
    """
    faces = self.detector.detect(image_rgb)
    if not faces:
      return AlignedFace(None, faces)
    crop = transform.warp_face(image_rgb, faces[0].landmarks, self.image_size)
    return AlignedFace(crop, faces)
