"""The one decode policy: every path decodes to exactly the pixels `cv2.imdecode` gives.

InsightFace decodes with OpenCV; TensorFlow's default JPEG decoder (the fast
integer IDCT) changes most pixel values by a few levels. The inputs are real
image crops (skimage's astronaut) at JPEG quality 75 and 95 with 4:2:0 and
4:4:4 chroma subsampling, a grayscale JPEG and a PNG, in the model's size
(112x112) and an odd one (123x100, partial JPEG blocks). The fast IDCT is the
negative control: it must differ, or the comparison could not fail.
"""
import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from tfface.export import saved_model
from tfface.inference import decode
from tfface.models import build_backbone

_RGB = skimage.data.astronaut()
CROPS = {"face": _RGB[60:172, 170:282], "odd": _RGB[30:153, 150:250]}
SUBSAMPLING = {"420": (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, 0x22),
               "444": (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, 0x11)}


def _encode_cases():
  """name -> encoded bytes, written from BGR arrays as InsightFace's OpenCV code does."""
  cases = {}
  for crop, rgb in CROPS.items():
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for quality in (75, 95):
      for name, (factor, _) in SUBSAMPLING.items():
        params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor]
        cases[f"{crop}_q{quality}_{name}"] = cv2.imencode(".jpg", bgr, params)[1].tobytes()
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cases[f"{crop}_gray"] = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    cases[f"{crop}_png"] = cv2.imencode(".png", bgr)[1].tobytes()
  return cases


CASES = _encode_cases()
JPEG_CASES = [name for name in CASES if not name.endswith("_png")]
MODEL_SIZE_CASES = [name for name in CASES if name.startswith("face_")]


def cv2_rgb(data):
  """The reference: `cv2.imdecode` (BGR, 3 channels) converted to RGB."""
  return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                      cv2.COLOR_BGR2RGB)


def _luma_sampling(data):
  """The luma component's sampling byte (0x22 = 4:2:0, 0x11 = 4:4:4) in the SOF0 header."""
  sof = data.index(b"\xff\xc0")
  return data[sof + 11]


def test_cases_are_what_they_claim():
  for name, data in CASES.items():
    if name.endswith("_png"):
      assert data[:8] == b"\x89PNG\r\n\x1a\n"
    elif name.endswith("_gray"):
      assert data[data.index(b"\xff\xc0") + 9] == 1  # one component
    else:
      assert _luma_sampling(data) == SUBSAMPLING[name[-3:]][1], name


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_image_equals_cv2(name):
  image, resized = decode.decode_image(CASES[name])
  assert not resized and image.dtype == np.uint8
  np.testing.assert_array_equal(image, cv2_rgb(CASES[name]))


@tf.function
def _decode_in_graph(data):
  return decode.decode_image_tf(data)


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_image_tf_equals_cv2(name):
  np.testing.assert_array_equal(_decode_in_graph(tf.constant(CASES[name])).numpy(),
                                cv2_rgb(CASES[name]))


@pytest.mark.parametrize("name", JPEG_CASES)
def test_negative_control_fast_idct_differs(name):
  fast = tf.io.decode_jpeg(CASES[name], channels=3, dct_method="INTEGER_FAST").numpy()
  assert np.mean(fast != cv2_rgb(CASES[name])) > 0.3, name


def test_decode_batch_equals_cv2_flips_and_drops():
  names = MODEL_SIZE_CASES
  data = [CASES[n] for n in names] + [b"not an image", CASES["odd_q95_444"], b""]
  flips = [i % 2 == 1 for i in range(len(data))]
  images, keep = decode.decode_batch(data, (112, 112), flips)
  np.testing.assert_array_equal(keep, [True] * len(names) + [False] * 3)
  want = [cv2_rgb(CASES[n])[:, ::-1] if flip else cv2_rgb(CASES[n])
          for n, flip in zip(names, flips)]
  np.testing.assert_array_equal(images, np.stack(want))


@tf.function
def _through_numpy_function(data):
  images, _ = tf.numpy_function(lambda d: decode.decode_batch(d, (112, 112)), [data],
                                [tf.uint8, tf.bool], stateful=False)
  return images


def _address(tensor):
  """Where a CPU tensor's buffer lies (through DLPack, which shares it)."""
  capsule = tf.experimental.dlpack.to_dlpack(tensor)

  class _Capsule:

    def __dlpack__(self, stream=None, **kwargs):
      del stream, kwargs
      return capsule

    def __dlpack_device__(self):
      return (1, 0)  # kDLCPU

  return np.from_dlpack(_Capsule()).ctypes.data


def test_decode_batch_output_is_taken_by_tensorflow_without_a_copy(monkeypatch):
  """The training input hands decode_batch's chunk to TensorFlow: it must not be copied.

  TensorFlow takes a numpy_function result's buffer as it is only when it is
  64-byte aligned (numpy aligns to 16); else it copies it (negative control).
  """
  returned = []
  real = decode.decode_batch

  def recording(*args, **kwargs):
    out = real(*args, **kwargs)
    returned.append(out[0].ctypes.data)
    return out

  monkeypatch.setattr(decode, "decode_batch", recording)
  data = tf.constant([CASES[n] for n in MODEL_SIZE_CASES])
  images = _through_numpy_function(data)
  assert returned[-1] % 64 == 0
  assert _address(images) == returned[-1]

  def unaligned(shape):  # the negative control: numpy's own 16-byte alignment, off by 16
    buf = np.empty(int(np.prod(shape)) + 64, np.uint8)
    start = (16 - buf.ctypes.data) % 64
    return buf[start:start + int(np.prod(shape))].reshape(shape)

  monkeypatch.setattr(decode, "_aligned_empty", unaligned)
  images = _through_numpy_function(data)
  assert returned[-1] % 64 and _address(images) != returned[-1]


@pytest.mark.parametrize("height,width", [(150, 130), (130, 150), (100, 90)])
def test_resize_in_graph_is_insightfaces_resize(height, width):
  # Shorter side to 112 (bicubic), then the centre: TensorFlow's bicubic
  # kernel (a = -0.5) is not OpenCV's (a = -0.75), so levels differ a little;
  # a stretch or an off-centre crop differs a lot.
  crop = _RGB[40:40 + height, 160:160 + width]
  data = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].tobytes()
  reference, resized = decode.decode_image(data, (112, 112))
  assert resized
  got = decode.decode_and_resize_tf(tf.constant(data), (112, 112)).numpy()
  assert got.shape == (112, 112, 3) and got.dtype == np.uint8
  diff = np.abs(got.astype(int) - reference)
  assert diff.mean() < 1.0 and diff.max() <= 16
  scale = 112 / min(height, width)
  shorter_side = cv2.resize(crop, (max(112, round(width * scale)), max(112, round(height * scale))),
                            interpolation=cv2.INTER_CUBIC)
  wrong = {"stretched": cv2.resize(crop, (112, 112), interpolation=cv2.INTER_CUBIC),
           "top-left crop": shorter_side[:112, :112]}
  for name, image in wrong.items():
    assert np.abs(image.astype(int) - reference).mean() > 10, name


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A small backbone's SavedModel, loaded back (the bytes signature is what TF Serving runs)."""
  tf.keras.utils.set_random_seed(3)
  model = build_backbone("r18", embedding_size=64, units=(1, 1, 1, 1),
                         widths=(8, 16, 32, 64), stem_width=8)
  module, signatures = saved_model.build_serving_module(model)
  path = str(tmp_path_factory.mktemp("decode_export"))
  tf.saved_model.save(module, path, signatures=signatures)
  return tf.saved_model.load(path)


def test_saved_model_bytes_signature_decodes_like_cv2(exported):
  names = MODEL_SIZE_CASES
  by_bytes = exported.signatures["serving_default"](
      image_bytes=tf.constant([CASES[n] for n in names]))["embedding"].numpy()
  serve_images = exported.signatures["serve_images"]
  pixels = np.stack([cv2_rgb(CASES[n]) for n in names])
  by_cv2 = serve_images(images=tf.constant(pixels))["embedding"].numpy()
  np.testing.assert_allclose(by_bytes, by_cv2, atol=1e-6)
  # Negative control: the pixels of TensorFlow's default (fast IDCT) decoder
  # give embeddings far outside that tolerance.
  jpegs = [n for n in names if n in JPEG_CASES]
  fast = np.stack([tf.io.decode_jpeg(CASES[n], channels=3, dct_method="INTEGER_FAST").numpy()
                   for n in jpegs])
  by_fast = serve_images(images=tf.constant(fast))["embedding"].numpy()
  rows = [names.index(n) for n in jpegs]
  assert np.abs(by_fast - by_bytes[rows]).max(axis=1).min() > 1e-4
