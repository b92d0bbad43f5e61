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

The served embeddings are single-view, or flip-summed for an export with
flip TTA; the threshold that decides "same person" is the one the export
stores for that form (`served_threshold`), read from the export directory
TF Serving serves. Versions differ in threshold and form, so the threshold
is read from the very version the request asks for (`resolve_served_export`).
"""
import base64
import dataclasses
import json
import os
import urllib.error
import urllib.request

import numpy as np

from tfface.inference import embedding as embedding_lib
from tfface.inference import loading

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
  path = f"/v1/models/{model}"
  if version is not None:  # version 0 is a valid TF Serving version
    path += f"/versions/{int(version)}"
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


@dataclasses.dataclass
class ServedThreshold:
  """The decision threshold for a served model's embeddings, and where it came from."""

  value: float
  embedding: str
  source: str


def resolve_served_export(export_path, version=None):
  """The export directory to read the threshold from, and the version to request.

  Both sides always name the same model version:

  * a model base (`BASE/NAME`) and no version: the newest version directory,
    and no version in the request (TF Serving serves its newest);
  * a model base and `version` N: `BASE/NAME/N`, and version N requested;
  * a version directory `BASE/NAME/M` and no version, or `version` M: that
    directory, and version M requested (not whatever TF Serving serves newest);
  * a version directory M and `version` N != M: refused (ValueError), rather
    than reading a sibling directory that was not named: which of the two was
    meant is the caller's to say;
  * a SavedModel directory with no numeric name (not a TF Serving layout):
    that directory, and `version` as given.

  Args:
    export_path: the model base directory TF Serving serves, or one version
      directory.
    version: the model version to request (default: see above).

  Returns:
    `(export_dir, request_version)`: `request_version` is None for TF
    Serving's newest.

  Raises:
    OSError: no such export or version.
    ValueError: a version directory and another `version`.
  """
  path = os.path.normpath(os.fspath(export_path))
  if loading.is_saved_model(path):
    name = os.path.basename(path)
    if name.isdigit():
      if version is not None and int(version) != int(name):
        raise ValueError(
            f"--export_dir={path} is version {int(name)} but --version={int(version)} "
            f"requests version {int(version)}: pass the model base "
            f"{os.path.dirname(path)} or {os.path.join(os.path.dirname(path), str(int(version)))}")
      return path, int(name)
    return path, version
  if version is not None:
    path = os.path.join(path, str(int(version)))
  elif os.path.isdir(path):
    path = loading.latest_version_dir(path) or path
  if not loading.is_saved_model(path):
    raise OSError(f"{path}: no SavedModel (saved_model.pb) here")
  return path, version


def served_threshold(export_path, version=None):
  """The threshold an export stores for the embedding its `serving_default` serves.

  Args:
    export_path: the model base directory TF Serving serves (`BASE/NAME`), or
      one version directory.
    version: the requested version (default: the newest in a model base, as
      TF Serving picks); `resolve_served_export` says which directory is read.

  Returns:
    A `ServedThreshold` (the 1.4 default when the export stores none).

  Raises:
    OSError: no such export or version.
    ValueError: the stored threshold belongs to another embedding form than
      the one served (an export written before the form was recorded), or a
      version directory and another `version`.
  """
  path, _ = resolve_served_export(export_path, version)
  meta = loading.read_export_metadata(path)
  served = embedding_lib.embedding_for_flip(meta.get("flip_tta", False))
  if meta.get("threshold") is None:
    return ServedThreshold(loading.DEFAULT_THRESHOLD, served,
                           f"default {loading.DEFAULT_THRESHOLD}, none stored in {path}")
  # Exports written before the form was recorded stored flip-summed thresholds.
  stored_for = meta.get("threshold_embedding", embedding_lib.FLIP_SUM)
  if stored_for != served:
    raise ValueError(f"{path}: the stored threshold {meta['threshold']} is for {stored_for} "
                     f"embeddings, but serving_default serves {served} ones; re-export "
                     "(tools/export.py measures the served form) or pass --threshold")
  target = meta.get("threshold_target")
  where = f"measured on {target}" if target else "stored"
  return ServedThreshold(float(meta["threshold"]), served, f"{where}, {path}")


def describe_embeddings(image_paths, embeddings, threshold=None):
  """Text with each embedding's head and the pairwise cosine similarities.

  With a `ServedThreshold`, each pair also gets its squared distance
  (2 - 2 * cosine) and the verdict.
  """
  lines = []
  for path, emb in zip(image_paths, embeddings):
    head = " ".join(f"{v:+.4f}" for v in emb[:4])
    lines.append(f"{path}: dim {emb.shape[0]}, norm {np.linalg.norm(emb):.4f}, [{head} ...]")
  if threshold is not None:
    lines.append(f"threshold {threshold.value:.4f} for {threshold.embedding} embeddings "
                 f"({threshold.source})")
  for i in range(len(image_paths)):
    for j in range(i + 1, len(image_paths)):
      cosine = float(np.dot(embeddings[i], embeddings[j]))
      line = f"cosine({image_paths[i]}, {image_paths[j]}) = {cosine:.6f}"
      if threshold is not None:
        distance = float(np.sum((embeddings[i] - embeddings[j]) ** 2))
        verdict = "same person" if distance < threshold.value else "different people"
        line += f", squared distance {distance:.6f}: {verdict}"
      lines.append(line)
  return "\n".join(lines)


def query_and_describe(server, model, image_paths, version=None, export_dir=None,
                       threshold=None):
  """`tools/serving_client.py`'s job: request embeddings, return the report text.

  Args:
    server: `host:port` of TF Serving's REST API.
    model: model name in TF Serving's config.
    image_paths: image files, sent as they are.
    version: optional model version.
    export_dir: the served export's directory (model base or version), to
      read its threshold from; the request then asks for the version whose
      threshold is used (`resolve_served_export`).
    threshold: a given squared-distance threshold (overrides `export_dir`'s).

  Returns:
    The report text (with verdicts when a threshold is known).

  Raises:
    ValueError: `export_dir` is a version directory and `version` another one.
  """
  decision = None
  if threshold is not None:
    decision = ServedThreshold(float(threshold), "served", "given")
  elif export_dir:
    path, version = resolve_served_export(export_dir, version)
    decision = served_threshold(path)
  embeddings = request_embeddings(server, model, image_paths, version)
  return describe_embeddings(image_paths, embeddings, decision)
