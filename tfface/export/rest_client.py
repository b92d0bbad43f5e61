"""A TF Serving REST client for exported face encoders (`tools/serving_client.py`).

The request is TF Serving's "row" format: one instance per image, the JPEG or
PNG bytes base64-encoded under `{"b64": ...}` (the form TF Serving decodes
into a DT_STRING tensor; the input is named `image_bytes`, ending in
`_bytes`, as TF Serving's conventions ask for binary data):

  {"signature_name": "serving_default",
   "instances": [{"image_bytes": {"b64": "..."}}, ...]}

The response is `{"predictions": [[...D floats...], ...]}` (TF Serving drops
the output name when the signature has a single output) or, for several
outputs, `{"predictions": [{"embedding": [...]}, ...]}`.
"""
import base64
import json
import urllib.error
import urllib.request

import numpy as np

INPUT_KEY = "image_bytes"
OUTPUT_KEY = "embedding"


def build_predict_request(images, signature_name="serving_default"):
  """The JSON-ready body of a `:predict` request for encoded images.

  Args:
    images: list of encoded image bytes (JPEG, PNG, ...).
    signature_name: the exported signature to call.

  Returns:
    A dict to serialize with `json.dumps`.
  """
  return {
      "signature_name": signature_name,
      "instances": [{INPUT_KEY: {"b64": base64.b64encode(bytes(b)).decode("ascii")}}
                    for b in images],
  }


def parse_predict_response(body):
  """Embeddings [n, D] from a `:predict` response (dict or JSON text).

  Raises:
    ValueError: the response is an error or has no predictions.
  """
  if isinstance(body, (str, bytes)):
    body = json.loads(body)
  if "error" in body:
    raise ValueError(f"TF Serving returned an error: {body['error']}")
  if "predictions" not in body:
    raise ValueError(f"no 'predictions' in the response (keys: {sorted(body)})")
  rows = [p[OUTPUT_KEY] if isinstance(p, dict) else p for p in body["predictions"]]
  return np.asarray(rows, dtype=np.float32)


def predict_url(server, model, version=None):
  """`http://HOST:PORT/v1/models/NAME[/versions/N]:predict`."""
  base = server if server.startswith(("http://", "https://")) else f"http://{server}"
  path = f"/v1/models/{model}" + (f"/versions/{int(version)}" if version else "")
  return f"{base.rstrip('/')}{path}:predict"


def request_embeddings(server, model, image_paths, version=None, timeout=60.0):
  """Sends image files to TF Serving and returns their embeddings.

  Args:
    server: `host:port` of TF Serving's REST API (default port 8501).
    model: model name in TF Serving's config.
    image_paths: image files, sent as they are.
    version: optional model version (default: the newest served).
    timeout: seconds to wait for the server.

  Returns:
    float32 [n, D] unit-norm embeddings.

  Raises:
    OSError: a file cannot be read or the server cannot be reached.
    ValueError: the server answered with an error.
  """
  images = []
  for path in image_paths:
    with open(path, "rb") as f:
      images.append(f.read())
  data = json.dumps(build_predict_request(images)).encode("utf-8")
  url = predict_url(server, model, version)
  request = urllib.request.Request(url, data=data,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return parse_predict_response(response.read())
  except urllib.error.HTTPError as e:
    raise ValueError(f"{url}: HTTP {e.code}: {e.read().decode('utf-8', 'replace')}") from e
  except urllib.error.URLError as e:
    raise OSError(f"{url}: cannot reach TF Serving ({e.reason})") from e


def describe_embeddings(image_paths, embeddings):
  """Text with each embedding's head and the pairwise cosine similarities."""
  lines = []
  for path, emb in zip(image_paths, embeddings):
    head = " ".join(f"{v:+.4f}" for v in emb[:4])
    lines.append(f"{path}: dim {emb.shape[0]}, norm {np.linalg.norm(emb):.4f}, [{head} ...]")
  for i in range(len(image_paths)):
    for j in range(i + 1, len(image_paths)):
      cosine = float(np.dot(embeddings[i], embeddings[j]))
      lines.append(f"cosine({image_paths[i]}, {image_paths[j]}) = {cosine:.6f}")
  return "\n".join(lines)


def query_and_describe(server, model, image_paths, version=None):
  """`tools/serving_client.py`'s job: request embeddings, return the report text."""
  embeddings = request_embeddings(server, model, image_paths, version)
  return describe_embeddings(image_paths, embeddings)
