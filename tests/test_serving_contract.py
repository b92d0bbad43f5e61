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
