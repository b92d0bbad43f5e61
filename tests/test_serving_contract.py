"""The TF Serving contract: the client's request, decoded as TF Serving decodes it,
run through the exported signature, gives the model's embeddings.

The TF Serving binary cannot be installed on CI machines, so a small HTTP
server in this process stands in for it: it parses the REST body with TF
Serving's rules ({"b64": ...} objects become DT_STRING bytes, row format,
single-output responses without the output name) and calls the SavedModel.
"""
import base64
import http.server
import json
import re
import threading

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_tool
from tfface import export
from tfface.models import build_backbone
from tfface.serving import rest_client


def tf_serving_decode(body, signature):
  """Row-format REST JSON -> input tensors, following TF Serving's rules."""
  request = json.loads(body)
  instances = request["instances"]
  inputs = signature.structured_input_signature[1]
  columns = {name: [] for name in inputs}
  for instance in instances:
    if set(instance) != set(inputs):
      raise ValueError(f"instance keys {sorted(instance)} != inputs {sorted(inputs)}")
    for name, value in instance.items():
      if isinstance(value, dict):  # the only object TF Serving accepts: {"b64": ...}
        if set(value) != {"b64"}:
          raise ValueError(f"unexpected object {value}")
        value = base64.b64decode(value["b64"])
      columns[name].append(value)
  return {name: tf.constant(values, dtype=inputs[name].dtype)
          for name, values in columns.items()}


def tf_serving_predict(loaded, body):
  request = json.loads(body)
  signature = loaded.signatures[request.get("signature_name", "serving_default")]
  outputs = signature(**tf_serving_decode(body, signature))
  if len(outputs) == 1:  # TF Serving omits the name of a single output
    return {"predictions": list(outputs.values())[0].numpy().tolist()}
  return {"predictions": [dict(zip(outputs, row)) for row in
                          zip(*[v.numpy().tolist() for v in outputs.values()])]}


THRESHOLD = 0.8  # given at export: the threshold of the served (single-view) form


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  model = build_backbone("r18", embedding_size=128, units=(1, 1, 1, 1),
                         widths=(16, 32, 64, 128), stem_width=16)
  base = tmp_path_factory.mktemp("models") / "face"
  path = export.export_saved_model(model, str(base), 1, threshold=THRESHOLD)
  return model, tf.saved_model.load(path), base


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """Three image files: a JPEG, a PNG and a 150x150 PNG (resized in the graph)."""
  path = tmp_path_factory.mktemp("photos")
  rng = np.random.default_rng(5)
  files = []
  for name, size in (("a.jpg", 112), ("b.png", 112), ("c.png", 150)):
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (9, 9), 0)
    cv2.imwrite(str(path / name), img)
    files.append(path / name)
  return files


def _expected(model, files):
  """What the training-time model gives on the decoded images."""
  rgb = []
  for f in files:
    img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
    rgb.append(img)
  same_size = [i for i, img in enumerate(rgb) if img.shape[:2] == (112, 112)]
  raw = model(np.stack([rgb[i] for i in same_size]).astype("float32")).numpy()
  return same_size, raw / np.linalg.norm(raw, axis=1, keepdims=True)


def test_client_payload_through_signature(served, photos):
  model, loaded, _ = served
  images = [f.read_bytes() for f in photos]
  body = json.dumps(rest_client.build_predict_request(images))
  assert json.loads(body)["instances"][0]["image_bytes"]["b64"] == \
      base64.b64encode(images[0]).decode()
  response = json.dumps(tf_serving_predict(loaded, body))
  embeddings = rest_client.parse_predict_response(response)
  assert embeddings.shape == (3, 128)
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
  same_size, expected = _expected(model, photos)
  np.testing.assert_allclose(embeddings[same_size], expected, atol=1e-5)
  # The named-output form (several outputs) parses the same way.
  named = {"predictions": [{"embedding": row} for row in embeddings.tolist()]}
  np.testing.assert_array_equal(rest_client.parse_predict_response(named), embeddings)
  with pytest.raises(ValueError, match="error"):
    rest_client.parse_predict_response({"error": "Servable not found"})


class _FakeServing(http.server.BaseHTTPRequestHandler):
  loaded = None

  def do_POST(self):  # noqa: N802  (http.server's name)
    body = self.rfile.read(int(self.headers["Content-Length"]))
    if not re.fullmatch(r"/v1/models/face(/versions/1)?:predict", self.path):
      self.send_response(404)
      payload = {"error": f"Servable not found for request: {self.path}"}
    else:
      self.send_response(200)
      payload = tf_serving_predict(self.loaded, body)
    data = json.dumps(payload).encode()
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.mark.slow
def test_serving_client_tool_against_stand_in_server(served, photos):
  model, loaded, base = served
  handler = type("Handler", (_FakeServing,), {"loaded": loaded})
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    address = f"127.0.0.1:{server.server_address[1]}"
    proc = run_tool("serving_client", f"--server={address}", "--model=face",
                    f"--export_dir={base}", *map(str, photos[:2]))
    with pytest.raises(ValueError, match="HTTP 404"):
      rest_client.request_embeddings(address, "other", [str(photos[0])])
  finally:
    server.shutdown()
  _, expected = _expected(model, photos[:2])
  cosine = float(np.dot(expected[0], expected[1]))
  match = re.search(r"cosine\(.*a\.jpg, .*b\.png\) = (-?[0-9.]+), squared distance "
                    r"([0-9.]+): (same person|different people)", proc.stdout)
  assert match, proc.stdout
  assert float(match.group(1)) == pytest.approx(cosine, abs=1e-5)
  assert float(match.group(2)) == pytest.approx(2 - 2 * cosine, abs=1e-5)
  verdict = "same person" if 2 - 2 * cosine < THRESHOLD else "different people"
  assert match.group(3) == verdict
  assert f"threshold {THRESHOLD:.4f} for single_view embeddings (stored, " in proc.stdout
  assert "dim 128, norm 1.0000" in proc.stdout


def _fake_export(path, **metadata):
  (path / "assets").mkdir(parents=True)
  (path / "saved_model.pb").write_bytes(b"")
  (path / "assets" / "tfface_metadata.json").write_text(json.dumps(metadata))


def test_served_threshold_belongs_to_the_served_form(tmp_path):
  base = tmp_path / "face"
  _fake_export(base / "2", flip_tta=True, threshold=0.9, threshold_embedding="flip_sum",
               threshold_target="lfw")
  _fake_export(base / "10", flip_tta=False, threshold=1.1,
               threshold_embedding="single_view")
  newest = rest_client.served_threshold(base)  # the newest version, as TF Serving
  assert (newest.value, newest.embedding) == (1.1, "single_view")
  two = rest_client.served_threshold(base, version=2)
  assert (two.value, two.embedding) == (0.9, "flip_sum") and "measured on lfw" in two.source
  # An export from before the form was recorded stored a flip-summed threshold:
  # comparing single-view embeddings against it is refused.
  _fake_export(tmp_path / "old", flip_tta=False, threshold=1.3)
  with pytest.raises(ValueError, match="for flip_sum embeddings, but serving_default "
                     "serves single_view"):
    rest_client.served_threshold(tmp_path / "old")
  _fake_export(tmp_path / "none", flip_tta=False, threshold=None)
  assert rest_client.served_threshold(tmp_path / "none").value == 1.4
  with pytest.raises(OSError, match="no SavedModel"):
    rest_client.served_threshold(base, version=3)


def test_predict_url_names_the_version_even_zero():
  assert rest_client.predict_url("localhost:8501", "face") == (
      "http://localhost:8501/v1/models/face:predict")
  assert rest_client.predict_url("localhost:8501", "face", 0) == (
      "http://localhost:8501/v1/models/face/versions/0:predict")
  assert rest_client.predict_url("https://h:1/", "face", 3) == (
      "https://h:1/v1/models/face/versions/3:predict")


@pytest.fixture
def two_versions(tmp_path):
  """A model base whose versions differ in threshold and embedding form."""
  base = tmp_path / "face"
  _fake_export(base / "0", flip_tta=False, threshold=0.5, threshold_embedding="single_view")
  _fake_export(base / "1", flip_tta=False, threshold=0.38, threshold_embedding="single_view")
  _fake_export(base / "3", flip_tta=True, threshold=0.37, threshold_embedding="flip_sum")
  return base


def test_threshold_comes_from_the_requested_version(two_versions):
  base = two_versions
  three = rest_client.served_threshold(base, 3)
  assert (three.value, three.embedding) == (0.37, "flip_sum")
  zero = rest_client.served_threshold(base, 0)
  assert (zero.value, zero.embedding) == (0.5, "single_view")
  one = rest_client.served_threshold(base / "1")
  assert (one.value, one.embedding) == (0.38, "single_view")
  assert rest_client.served_threshold(base / "1", 1).value == 0.38
  # Version directory 1 with --version=3: refused, naming both versions.
  with pytest.raises(ValueError, match=r"version 1 .*--version=3") as info:
    rest_client.served_threshold(base / "1", 3)
  assert "\n" not in str(info.value)


def test_resolve_served_export_pairs_the_request_with_its_threshold(two_versions):
  base = two_versions
  # Base, no version: TF Serving's newest on both sides (the request names none).
  assert rest_client.resolve_served_export(base) == (str(base / "3"), None)
  assert rest_client.resolve_served_export(base, 0) == (str(base / "0"), 0)
  assert rest_client.resolve_served_export(base, 3) == (str(base / "3"), 3)
  # A version directory without --version: that very version is requested.
  assert rest_client.resolve_served_export(base / "1") == (str(base / "1"), 1)
  assert rest_client.resolve_served_export(f"{base / '1'}/", 1) == (str(base / "1"), 1)
  with pytest.raises(OSError, match="no SavedModel"):
    rest_client.resolve_served_export(base, 2)


def test_query_requests_the_version_whose_threshold_it_uses(two_versions, monkeypatch):
  base = two_versions
  requested = []

  def fake_request(server, model, image_paths, version=None, timeout=60.0):
    del server, model, timeout
    requested.append(version)
    return np.eye(len(image_paths), 4, dtype=np.float32)

  monkeypatch.setattr(rest_client, "request_embeddings", fake_request)
  files = ["a.jpg", "b.jpg"]
  text = rest_client.query_and_describe("h:1", "face", files, None, str(base / "1"))
  assert requested[-1] == 1 and "threshold 0.3800 for single_view" in text
  text = rest_client.query_and_describe("h:1", "face", files, None, str(base))
  assert requested[-1] is None and "threshold 0.3700 for flip_sum" in text
  text = rest_client.query_and_describe("h:1", "face", files, 0, str(base))
  assert requested[-1] == 0 and "threshold 0.5000 for single_view" in text
  text = rest_client.query_and_describe("h:1", "face", files, 3, str(base / "3"))
  assert requested[-1] == 3 and "threshold 0.3700 for flip_sum" in text
  count = len(requested)
  with pytest.raises(ValueError, match=r"version 1 .*--version=3"):
    rest_client.query_and_describe("h:1", "face", files, 3, str(base / "1"))
  assert len(requested) == count  # refused before any request


def test_serving_client_tool_refuses_mixed_versions(two_versions):
  proc = run_tool("serving_client", "--server=127.0.0.1:9", "--model=face",
                  f"--export_dir={two_versions / '1'}", "--version=3", "a.jpg",
                  check=False)
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert "version 1" in lines[0] and "--version=3" in lines[0]
