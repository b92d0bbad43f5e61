"""From image embeddings to template features to pair scores, as InsightFace does.

`eval_ijbc.py`'s steps, each switchable as in its test modes:

1. flip (`F`): the embedding of the image plus that of its mirror image;
2. norm (`N`): keep the embedding's norm (default), or L2-normalise it;
3. detector (`D`): multiply by the detector's face score;
4. pool: per template, average the images of each media (the frames of a
   video), sum the media means, L2-normalise (an all-zero template stays
   zero, as `sklearn.preprocessing.normalize` leaves it);
5. score: the dot product of the two templates of a pair.

Pooling accumulates in float64 and stores unit rows in float32; the
reference's per-image features are float32 and its media means are float32
sums, so scores agree with it to about 1e-7. Scoring is float32 too:
IJB-C's 15,658,489 pairs are scored in about 1.3 s on the 2-core CI machine
(`benchmarks/ijb_scoring.py`); the working memory is one block of template
products and chunks of pairs, never pairs x embedding.
"""
import numpy as np

# Rows of sorted images pooled at once (bounds the float64 copy).
_POOL_CHUNK = 16384
# Dense blocks of template x template scores are at most this many bytes.
BLOCK_BYTES = 64 << 20
# Scoring a pair by gathering its two rows costs as much as 40-60 entries of
# a dense (BLAS) block product (measured on the 2-core CI machine); below 32
# dense entries per pair, blocks are clearly the cheaper way.
GATHER_COST = 32
_GATHER_CHUNK = 8192
# Pairs mapped to rows (and picked from a block) at a time.
_PAIR_CHUNK = 1 << 18


def image_features(original, flipped=None, detector_scores=None, norm_score=True):
  """Per-image features before pooling (InsightFace's F, N and D switches).

  Args:
    original: [n, D] raw embeddings of the aligned images.
    flipped: [n, D] raw embeddings of their mirror images, or None (no flip).
    detector_scores: [n] face scores to multiply by, or None (no weighting).
    norm_score: keep the embedding norms; False L2-normalises each image.

  Returns:
    float32 [n, D].
  """
  features = np.array(original, np.float32)  # a copy: updated in place below
  if flipped is not None:
    features += np.asarray(flipped, np.float32)
  if not norm_score:
    features /= np.linalg.norm(features, axis=1, keepdims=True)  # InsightFace divides as is
  if detector_scores is not None:
    features *= np.asarray(detector_scores, np.float32)[:, None]
  return features


def pool_templates(features, templates, medias):
  """Template features: media means summed per template, L2-normalised.

  Args:
    features: [n, D] per-image features (`image_features`).
    templates: [n] template id of each image.
    medias: [n] media id of each image.

  Returns:
    `(template_ids, template_features)`: the sorted distinct template ids
    [T] and float32 [T, D] unit rows (zero rows stay zero).
  """
  features = np.asarray(features)
  templates = np.asarray(templates, np.int64)
  medias = np.asarray(medias, np.int64)
  order = np.lexsort((medias, templates))  # by template, then media
  t_sorted, m_sorted = templates[order], medias[order]
  n = len(order)
  # Group boundaries in the sorted order: media (image index) and templates
  # (media index); each array ends with its total so that [i, i + 1) spans a group.
  new_media = np.r_[True, (np.diff(t_sorted) != 0) | (np.diff(m_sorted) != 0)]
  media_starts = np.r_[np.flatnonzero(new_media), n]
  media_templates = t_sorted[media_starts[:-1]]
  template_starts = np.r_[np.flatnonzero(np.r_[True, np.diff(media_templates) != 0]),
                          len(media_templates)]
  template_ids = media_templates[template_starts[:-1]]
  template_image_starts = media_starts[template_starts]
  pooled = np.empty((len(template_ids), features.shape[1]), np.float64)
  first = 0
  while first < len(template_ids):  # chunks of whole templates, ~_POOL_CHUNK images
    end = int(np.searchsorted(template_image_starts,
                              template_image_starts[first] + _POOL_CHUNK, side="right"))
    end = min(max(end - 1, first + 1), len(template_ids))
    media_lo, media_hi = template_starts[first], template_starts[end]
    image_lo, image_hi = media_starts[media_lo], media_starts[media_hi]
    rows = features[order[image_lo:image_hi]]
    media_means = np.add.reduceat(rows, media_starts[media_lo:media_hi] - image_lo, axis=0,
                                  dtype=np.float64)
    media_means /= np.diff(media_starts[media_lo:media_hi + 1])[:, None]
    pooled[first:end] = np.add.reduceat(media_means,
                                        template_starts[first:end] - media_lo, axis=0)
    first = end
  norms = np.linalg.norm(pooled, axis=1, keepdims=True)
  pooled /= np.where(norms == 0, 1.0, norms)
  return template_ids, pooled.astype(np.float32)


def template_rows(template_ids, ids, first_pair=0):
  """Row of each id in the sorted `template_ids` (a lookup table when ids are compact).

  Args:
    template_ids: [T] sorted ids.
    ids: int array of ids (rows of pairs).
    first_pair: the pair number of `ids[0]` minus one, for the error message.

  Raises:
    ValueError: an id that is not in `template_ids` (names the first).
  """
  ids = np.asarray(ids, np.int64)
  low, span = int(template_ids[0]), int(template_ids[-1] - template_ids[0]) + 1
  if span <= 16 * len(template_ids) + 65536:
    # Like the reference's `template2id` table; 10-30x faster than a binary search.
    table = np.full(span + 1, -1, np.int64)  # the extra slot: ids out of range
    table[template_ids - low] = np.arange(len(template_ids))
    rows = table[np.clip(ids - low, -1, span)]  # -1 hits the extra slot too
    bad = rows < 0
  else:
    rows = np.minimum(np.searchsorted(template_ids, ids), len(template_ids) - 1)
    bad = template_ids[rows] != ids
  if bad.any():
    index = np.unravel_index(int(np.argmax(bad)), ids.shape)
    raise ValueError(f"template {int(ids[index])} (pair {first_pair + index[0] + 1}) has "
                     "no features")
  return rows


def _row_chunks(template_ids, pairs):
  """`(start, rows [c, 2])` over the pairs, `_PAIR_CHUNK` at a time."""
  for start in range(0, len(pairs), _PAIR_CHUNK):
    yield start, template_rows(template_ids, pairs[start:start + _PAIR_CHUNK], start)


def _score_dense(features, rows, used, out, block_bytes):
  """Blocks of (first templates) x (second templates) products; picks the pairs.

  `rows` (int32 [P, 2]) is overwritten with each template's position among
  the used first / second templates.
  """
  position = (np.cumsum(used, axis=1) - 1).astype(np.int32)
  for start in range(0, len(rows), _PAIR_CHUNK):
    chunk = rows[start:start + _PAIR_CHUNK]
    chunk[:, 0] = position[0, chunk[:, 0]]
    chunk[:, 1] = position[1, chunk[:, 1]]
  first, second = np.flatnonzero(used[0]), np.flatnonzero(used[1])
  right = np.ascontiguousarray(features[second].T)
  # int32 flat indices: a block has far fewer than 2**31 entries.
  block_rows = max(1, min(block_bytes // 4, 2**31 - 1) // len(second))
  width = np.int32(len(second))
  for lo in range(0, len(first), block_rows):
    hi = min(lo + block_rows, len(first))
    block = (features[first[lo:hi]] @ right).ravel()
    whole = lo == 0 and hi == len(first)
    for start in range(0, len(rows), _PAIR_CHUNK):
      pos1, pos2 = rows[start:start + _PAIR_CHUNK, 0], rows[start:start + _PAIR_CHUNK, 1]
      if whole:
        out[start:start + len(pos1)] = np.take(block, pos1 * width + pos2, mode="clip")
        continue
      index = np.flatnonzero((pos1 >= lo) & (pos1 < hi))
      flat = (pos1[index] - np.int32(lo)) * width + pos2[index]
      out[start + index] = np.take(block, flat, mode="clip")  # in range by construction


def _score_gather(features, rows, out):
  for lo in range(0, len(rows), _GATHER_CHUNK):
    chunk = rows[lo:lo + _GATHER_CHUNK]
    out[lo:lo + len(chunk)] = np.einsum("ij,ij->i", features[chunk[:, 0]],
                                        features[chunk[:, 1]])


def score_pairs(template_ids, template_features, pairs, block_bytes=BLOCK_BYTES):
  """The dot product of the two templates of every pair.

  When the pairs are dense among the templates they use (IJB-C: enrolment x
  verification templates, 23% of all combinations), blocks of the template
  product matrix are computed with BLAS and the pairs picked from them;
  sparse pair lists gather the two rows of each pair instead. Besides the
  scores, memory holds two int32 rows per pair, one block of at most
  `block_bytes` and chunks of `_PAIR_CHUNK` pairs: nothing of size
  pairs x embedding.

  Args:
    template_ids: [T] sorted template ids (`pool_templates`).
    template_features: [T, D] template features.
    pairs: [P, 2] template ids.
    block_bytes: the most memory one dense block may take.

  Returns:
    float32 [P] scores.

  Raises:
    ValueError: a pair names a template without features.
  """
  features = np.ascontiguousarray(template_features, np.float32)
  template_ids = np.asarray(template_ids, np.int64)
  pairs = np.asarray(pairs).reshape(-1, 2)
  out = np.empty(len(pairs), np.float32)
  if not len(pairs):
    return out
  if not len(template_ids):
    raise ValueError(f"{len(pairs)} pairs but no template features")
  rows = np.empty(pairs.shape, np.int32)  # IJB-C: 125 MB
  used = np.zeros((2, len(features)), bool)  # templates used first / second
  for start, chunk in _row_chunks(template_ids, pairs):
    rows[start:start + len(chunk)] = chunk
    used[0, chunk[:, 0]] = True
    used[1, chunk[:, 1]] = True
  num_first, num_second = used.sum(axis=1)
  if num_first * num_second <= GATHER_COST * len(pairs):
    _score_dense(features, rows, used, out, block_bytes)
  else:
    _score_gather(features, rows, out)
  return out
