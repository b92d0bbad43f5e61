"""Procedural face images for the synthetic dataset: identities and their photos.

An identity is a fixed set of geometry and appearance parameters (face shape,
skin tone, eyes, brows, nose, mouth, hair, ears, facial hair). A photo of it
redraws those parts with the variation real photos have: expression, small
pose (yaw shifts the inner features, roll/scale/shift warp the whole image),
lighting, colour cast, blur, sensor noise, and occasional occluders (glasses,
a mask band). Faces sit on the arcface 112x112 template: eyes near (38, 52)
and (74, 52), nose tip (56, 72), mouth corners (41, 92) and (71, 92).

Identity differences are deliberately modest next to the photo variation, so
that raw pixels (or an untrained network) verify poorly while a trained
network can learn the geometry.
"""
import dataclasses

import cv2
import numpy as np

SIZE = 112
_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel feature positions
_AA = cv2.LINE_AA

# BGR palettes; identities pick a point between neighbouring entries.
_SKIN = np.array([[70, 95, 135], [95, 125, 170], [120, 150, 195], [150, 180, 220],
                  [175, 200, 235]], np.float32)
_HAIR = np.array([[20, 20, 25], [30, 40, 60], [40, 65, 100], [50, 80, 140],
                  [90, 150, 200], [150, 155, 160]], np.float32)
_BROW_T = tuple(np.linspace(-1, 1, 7))
_IRIS = np.array([[30, 45, 70], [40, 70, 100], [60, 110, 100], [140, 110, 70],
                  [110, 110, 105]], np.float32)


@dataclasses.dataclass
class Identity:
  """Fixed appearance of one synthetic person (all lengths in pixels)."""

  skin: np.ndarray
  hair: np.ndarray
  iris: np.ndarray
  face_w: float
  face_h: float
  face_cy: float
  jaw: float
  eye_dx: float
  eye_y: float
  eye_rx: float
  eye_ry: float
  eye_tilt: float
  brow_gap: float
  brow_thick: float
  brow_len: float
  brow_arch: float
  brow_tilt: float
  nose_y: float
  nose_w: float
  mouth_w: float
  mouth_y: float
  lip: float
  lip_color: np.ndarray
  smile: float
  hairline: float
  hair_volume: float
  hair_side: float
  fringe: int
  ear: float
  beard: float
  mole: tuple | None
  glasses_rate: float


def _palette(rng, table, spread=1.0):
  t = rng.uniform(0, len(table) - 1)
  i = min(int(t), len(table) - 2)
  color = table[i] * (1 - (t - i)) + table[i + 1] * (t - i)
  return color + rng.normal(0, 6 * spread, 3).astype(np.float32)


def sample_identity(rng: np.random.Generator) -> Identity:
  """Draws the fixed parameters of one identity."""
  u = rng.uniform
  skin = _palette(rng, _SKIN)
  return Identity(
      skin=skin, hair=_palette(rng, _HAIR), iris=_palette(rng, _IRIS),
      face_w=u(34, 41), face_h=u(46, 54), face_cy=u(62, 66), jaw=u(0.55, 0.95),
      eye_dx=u(15.5, 19.5), eye_y=u(49.5, 54), eye_rx=u(5, 7.5), eye_ry=u(2.2, 3.8),
      eye_tilt=u(-8, 8), brow_gap=u(6.5, 11), brow_thick=u(1.5, 3.5), brow_len=u(11, 17),
      brow_arch=u(0, 4), brow_tilt=u(-10, 10), nose_y=u(68, 76), nose_w=u(6, 12),
      mouth_w=u(11.5, 17), mouth_y=u(89.5, 95), lip=u(1.5, 3.5),
      lip_color=skin * np.float32(u(0.6, 0.85)) + np.float32([0, 0, u(10, 40)]),
      smile=u(-1.5, 3), hairline=u(18, 33), hair_volume=u(1, 9), hair_side=u(45, 105),
      fringe=int(rng.integers(0, 3)), ear=u(5, 9),
      beard=u(0.2, 0.6) if u() < 0.15 else 0.0,
      mole=(u(-22, 22), u(58, 85)) if u() < 0.3 else None,
      glasses_rate=0.6 if u() < 0.15 else 0.04)


def _p(x, y):
  return (int(round(x * 16)), int(round(y * 16)))


def _ax(a, b):
  return (max(1, int(round(a * 16))), max(1, int(round(b * 16))))


def _ellipse(img, cx, cy, a, b, color, angle=0.0, thickness=-1, start=0, end=360):
  cv2.ellipse(img, _p(cx, cy), _ax(a, b), angle, start, end, [float(c) for c in color],
              thickness, _AA, _SHIFT)


def _blend(img, mask, color):
  """Paints `color` through a uint8 coverage mask (soft anti-aliased edges)."""
  weight = mask.astype(np.float32) * np.float32(1.0 / 255.0)
  paint = np.empty_like(img)
  paint[:] = np.clip(np.asarray(color) + 0.5, 0, 255).astype(np.uint8)
  img[:] = cv2.blendLinear(paint, img, weight, 1.0 - weight)


def _background(rng):
  # A smooth colour gradient: random 2x2 corner colours, bilinearly enlarged.
  corners = rng.uniform(40, 220, 3) + rng.uniform(-30, 30, (2, 2, 3))
  img = cv2.resize(np.clip(corners, 0, 255).astype(np.uint8), (SIZE, SIZE),
                   interpolation=cv2.INTER_LINEAR)
  for _ in range(int(rng.integers(0, 3))):  # out-of-focus clutter
    _ellipse(img, rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(5, 30),
             rng.uniform(5, 30), rng.uniform(30, 230, 3), angle=rng.uniform(0, 180))
  return img


def _hair(img, ident, dx, jitter):
  """Hair cap above a curved hairline, optional sides, optional fringe."""
  mask = np.zeros((SIZE, SIZE), np.uint8)
  top = ident.face_cy - ident.face_h
  _ellipse(mask, 56 + dx * 0.3, ident.face_cy, ident.face_w + ident.hair_volume,
           ident.face_h + ident.hair_volume, [255])
  forehead_b = ident.face_h * 1.4
  _ellipse(mask, 56 + dx, ident.hairline + jitter + forehead_b, ident.face_w * 0.86,
           forehead_b, [0])
  if ident.hair_side > 60:  # hair down the sides of the face
    side = np.zeros_like(mask)
    _ellipse(side, 56 + dx * 0.3, ident.face_cy, ident.face_w + ident.hair_volume,
             ident.face_h + ident.hair_volume, [255])
    side[int(ident.hair_side):] = 0
    side[:, int(56 - ident.face_w * 0.8):int(56 + ident.face_w * 0.8)] = 0
    mask = np.maximum(mask, side)
  if ident.fringe == 1:
    cv2.rectangle(mask, _p(56 - ident.face_w * 0.75 + dx, top), _p(
        56 + ident.face_w * 0.75 + dx, ident.hairline + jitter + 9), 255, -1, _AA, _SHIFT)
  elif ident.fringe == 2:
    pts = np.array([_p(56 - ident.face_w * 0.8 + dx, ident.hairline + jitter + 12),
                    _p(56 + ident.face_w * 0.8 + dx, ident.hairline + jitter),
                    _p(56 + ident.face_w * 0.8 + dx, top), _p(56 - ident.face_w + dx, top)])
    cv2.fillPoly(mask, [pts], 255, _AA, _SHIFT)
  _blend(img, mask, ident.hair)


def _eye(img, ident, cx, cy, side, blink, gaze):
  tilt = ident.eye_tilt * side
  ry = ident.eye_ry * (0.15 if blink else 1.0)
  _ellipse(img, cx, cy, ident.eye_rx, ry + 1.2, ident.skin * 0.8, tilt)  # socket shadow
  _ellipse(img, cx, cy, ident.eye_rx, ry, (225, 230, 235), tilt)
  if not blink:
    r = min(ry, ident.eye_rx * 0.45)
    _ellipse(img, cx + gaze, cy, r, r, ident.iris)
    _ellipse(img, cx + gaze, cy, r * 0.45, r * 0.45, (15, 15, 15))
  _ellipse(img, cx, cy, ident.eye_rx, ry, ident.skin * 0.45, tilt, 1, 180, 360)


def _brow(img, ident, cx, cy, side, raise_):
  half = ident.brow_len / 2
  y = cy - ident.brow_gap - raise_
  pts = []
  for t in _BROW_T:
    x = cx + t * half * side
    pts.append(_p(x, y - ident.brow_arch * (1 - t * t) + t * ident.brow_tilt * 0.15))
  cv2.polylines(img, [np.array(pts)], False, [float(c) for c in ident.hair * 0.8],
                max(1, int(round(ident.brow_thick))), _AA, _SHIFT)


def render(ident: Identity, rng: np.random.Generator) -> np.ndarray:
  """Renders one photo of `ident` as a 112x112 BGR uint8 image."""
  u = rng.uniform
  img = _background(rng)
  yaw, pitch = u(-1, 1), u(-2, 2)
  dx = yaw * 9.0  # inner features move with yaw, the outline much less
  skin = ident.skin * np.float32(u(0.93, 1.07))
  # Neck, ears, face.
  cv2.rectangle(img, _p(56 - ident.face_w * 0.45, 90), _p(56 + ident.face_w * 0.45, 112),
                [float(c) for c in skin * 0.8], -1, _AA, _SHIFT)
  for side in (-1, 1):
    _ellipse(img, 56 + side * (ident.face_w - 1) - dx * 0.3, ident.eye_y + 12 + pitch,
             ident.ear * (1 - 0.3 * side * yaw), ident.ear * 1.7, skin * 0.9)
  _ellipse(img, 56 + dx * 0.3, ident.face_cy + pitch * 0.3, ident.face_w, ident.face_h, skin)
  _ellipse(img, 56 + dx * 0.5, ident.face_cy + ident.face_h * 0.35, ident.face_w * ident.jaw,
           ident.face_h * 0.65, skin)
  if ident.beard:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    _ellipse(mask, 56 + dx * 0.5, ident.face_cy + ident.face_h * 0.35,
             ident.face_w * ident.jaw, ident.face_h * 0.65, [255 * ident.beard])
    mask[:int(ident.mouth_y - 8 + pitch)] = 0
    _blend(img, mask, ident.hair * 0.9)
  if ident.mole:
    _ellipse(img, 56 + ident.mole[0] + dx, ident.mole[1] + pitch, 1.1, 1.1, skin * 0.5)
  # Eyes and brows.
  blink = u() < 0.05
  gaze, raise_ = u(-1.5, 1.5), u(-1, 2)
  for side in (-1, 1):
    cx = 56 + side * ident.eye_dx * (1 - 0.08 * side * yaw) + dx
    cy = ident.eye_y + pitch
    _eye(img, ident, cx, cy, side, blink, gaze)
    _brow(img, ident, cx, cy, side, raise_)
  # Nose: bridge shading, tip, nostrils.
  ny = ident.nose_y + pitch
  nx = 56 + dx * 1.4
  cv2.line(img, _p(56 + dx * 0.9, ident.eye_y + 4 + pitch), _p(nx + 1, ny - 2),
           [float(c) for c in skin * 0.85], 2, _AA, _SHIFT)
  _ellipse(img, nx, ny, ident.nose_w * 0.45, 3.5, skin * 0.93)
  for side in (-1, 1):
    _ellipse(img, nx + side * ident.nose_w * 0.38, ny + 1.5, 1.8, 1.1, skin * 0.45)
  # Mouth: expression bends the corners; sometimes open.
  smile = ident.smile + u(-2, 3)
  my, half = ident.mouth_y + pitch, ident.mouth_w * u(0.95, 1.08)
  mx = 56 + dx * 1.1
  opening = u(1, 4) if u() < 0.2 else 0.0
  upper = [_p(mx - half, my - smile), _p(mx - half / 2, my - ident.lip - 0.5),
           _p(mx, my - ident.lip * 0.7), _p(mx + half / 2, my - ident.lip - 0.5),
           _p(mx + half, my - smile)]
  lower = [_p(mx + half, my - smile), _p(mx + half / 2, my + ident.lip + opening),
           _p(mx, my + ident.lip * 1.3 + opening), _p(mx - half / 2, my + ident.lip + opening)]
  cv2.fillPoly(img, [np.array(upper + lower)], [float(c) for c in ident.lip_color], _AA, _SHIFT)
  cv2.polylines(img, [np.array([_p(mx - half, my - smile), _p(mx, my + opening * 0.5),
                                _p(mx + half, my - smile)])], False,
                [float(c) for c in ident.lip_color * 0.5], 1, _AA, _SHIFT)
  _hair(img, ident, dx, u(-1.5, 1.5))
  _occluders(img, ident, rng, dx, pitch)
  return _photo(img, rng)


def _occluders(img, ident, rng, dx, pitch):
  u = rng.uniform
  if u() < ident.glasses_rate:
    color = rng.uniform(10, 90, 3)
    r = u(8, 11)
    lens = np.zeros((SIZE, SIZE), np.uint8)
    for side in (-1, 1):
      cx, cy = 56 + side * ident.eye_dx + dx, ident.eye_y + pitch
      _ellipse(lens, cx, cy, r, r * 0.8, [255])
      _ellipse(img, cx, cy, r, r * 0.8, color, thickness=2)
    if u() < 0.25:  # sunglasses
      _blend(img, (lens * 0.8).astype(np.uint8), color * 0.5)
    cv2.line(img, _p(56 - ident.eye_dx + r + dx, ident.eye_y + pitch),
             _p(56 + ident.eye_dx - r + dx, ident.eye_y + pitch),
             [float(c) for c in color], 2, _AA, _SHIFT)
  if u() < 0.08:  # a mask band over nose and mouth
    top = ident.nose_y - 3 + pitch
    pts = np.array([_p(56 - ident.face_w - 1, top), _p(56 + ident.face_w + 1, top),
                    _p(56 + ident.face_w * 0.7, 112), _p(56 - ident.face_w * 0.7, 112)])
    cv2.fillPoly(img, [pts], [float(c) for c in rng.uniform(60, 250, 3)], _AA, _SHIFT)


def _photo(img, rng):
  """Camera effects: roll/scale/shift, lighting, colour cast, blur, noise."""
  u = rng.uniform
  m = cv2.getRotationMatrix2D((56, 60), u(-9, 9), u(0.92, 1.08))
  m[:, 2] += u(-3, 3, 2)
  img = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT101)
  # Directional light and colour cast as a smooth per-pixel, per-channel gain.
  light = 1.0 + rng.uniform(-0.35, 0.35, (2, 2, 1))
  gain = light * u(0.7, 1.25) * rng.uniform(0.9, 1.1, 3)
  field = cv2.resize(gain.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
  out = cv2.multiply(img, field, dtype=cv2.CV_32F)
  if u() < 0.5:
    out = cv2.GaussianBlur(out, (0, 0), u(0.4, 1.3))
  noise = rng.standard_normal(out.shape, dtype=np.float32)
  noise *= np.float32(u(0, 7))
  noise += np.float32(u(-20, 20))
  return cv2.add(out, noise, dtype=cv2.CV_8U)


def encode(img: np.ndarray, quality: int = 95) -> bytes:
  """JPEG-encodes a BGR image with OpenCV, as InsightFace packed its datasets."""
  ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise ValueError("cv2.imencode failed to encode a synthetic face")
  return buf.tobytes()
