"""The 5-point similarity alignment onto InsightFace's 112x112 template.

InsightFace aligns every training and test face by estimating the similarity
transform (uniform scale, rotation, translation; no shear, no reflection)
that maps five detected landmarks, in the order left eye, right eye, nose,
left mouth corner, right mouth corner (left = image left), onto fixed
positions (`ARCFACE_DST`), then warping the photo with it.
"""
import cv2
import numpy as np

# Landmark positions of the 112x112 ArcFace template (x, y).
ARCFACE_DST = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def template(image_size=112):
  """The template scaled to `image_size`, as InsightFace's `estimate_norm` does.

  Sizes that are multiples of 112 scale the template; multiples of 128 scale
  it by size / 128 and shift it right by 8 * size / 128 pixels (the 128-pixel
  crops some InsightFace models use).

  Raises:
    ValueError: for sizes that are multiples of neither.
  """
  if image_size % 112 == 0:
    return ARCFACE_DST * (image_size / 112.0)
  if image_size % 128 == 0:
    ratio = image_size / 128.0
    dst = ARCFACE_DST * ratio
    dst[:, 0] += 8.0 * ratio
    return dst
  raise ValueError(f"image_size must be a multiple of 112 or 128, got {image_size}")


def similarity_transform(src, dst):
  """Least-squares similarity transform from `src` to `dst` points (Umeyama 1991).

  Args:
    src: [N, 2] source points.
    dst: [N, 2] destination points.

  Returns:
    A 2x3 float64 matrix `M` with `dst ~= M @ [x, y, 1]`.
  """
  src = np.asarray(src, dtype=np.float64)
  dst = np.asarray(dst, dtype=np.float64)
  src_mean, dst_mean = src.mean(0), dst.mean(0)
  src_c, dst_c = src - src_mean, dst - dst_mean
  cov = dst_c.T @ src_c / len(src)
  u, s, vt = np.linalg.svd(cov)
  # Force a proper rotation: a reflection would mirror the face.
  d = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    d[1] = -1.0
  rotation = u @ np.diag(d) @ vt
  src_var = np.mean(np.sum(src_c ** 2, axis=1))
  scale = float(np.sum(s * d) / src_var) if src_var > 0 else 1.0
  translation = dst_mean - scale * rotation @ src_mean
  return np.hstack([scale * rotation, translation[:, None]])


def estimate_norm(landmarks5, image_size=112):
  """The 2x3 matrix that maps five landmarks onto the ArcFace template.

  Args:
    landmarks5: [5, 2] (x, y) of left eye, right eye, nose, left and right
      mouth corners in image coordinates.
    image_size: side of the aligned crop (112, or a multiple of 112 or 128).

  Returns:
    A 2x3 float64 affine matrix for `cv2.warpAffine`.

  Raises:
    ValueError: landmarks of the wrong shape or an unsupported size.
  """
  landmarks5 = np.asarray(landmarks5, dtype=np.float64)
  if landmarks5.shape != (5, 2):
    raise ValueError(f"expected 5 (x, y) landmarks, got shape {landmarks5.shape}")
  return similarity_transform(landmarks5, template(image_size))


def warp_face(image, landmarks5, image_size=112):
  """Crops and aligns one face: `image_size` x `image_size` x channels.

  Args:
    image: [H, W, C] uint8 image (any channel order; it is preserved).
    landmarks5: [5, 2] landmarks, see `estimate_norm`.
    image_size: side of the output.

  Returns:
    The aligned face, same dtype as `image`; pixels outside the photo are 0.
  """
  matrix = estimate_norm(landmarks5, image_size)
  return cv2.warpAffine(image, matrix, (image_size, image_size), borderValue=0.0)


def transform_points(matrix, points):
  """Applies a 2x3 affine matrix to [N, 2] points."""
  points = np.asarray(points, dtype=np.float64)
  return points @ matrix[:, :2].T + matrix[:, 2]
