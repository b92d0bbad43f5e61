"""Which classes each replica owns, and how many of them a step samples."""


def shard_ranges(num_classes: int, num_shards: int) -> list:
  """Contiguous class ranges, one per replica, as arcface_torch splits them.

  Replica r owns `[start_r, start_r + n_r)` with
  `n_r = num_classes // num_shards + (r < num_classes % num_shards)`: the
  first `num_classes % num_shards` replicas hold one class more.

  Args:
    num_classes: identities C.
    num_shards: replicas in sync R.

  Returns:
    A list of R `(start, stop)` pairs covering `[0, C)` in order.

  Raises:
    ValueError: fewer classes than replicas (a replica would own nothing),
      or a count below 1.
  """
  num_classes, num_shards = int(num_classes), int(num_shards)
  if num_shards < 1:
    raise ValueError(f"Partial FC needs at least one replica. Received: "
                     f"num_replicas={num_shards}")
  if num_classes < num_shards:
    raise ValueError(f"Partial FC shards the classes over the replicas, so num_classes "
                     f"must be at least the {num_shards} replicas in sync. Received: "
                     f"num_classes={num_classes}")
  base, extra = divmod(num_classes, num_shards)
  ranges, start = [], 0
  for r in range(num_shards):
    stop = start + base + (r < extra)
    ranges.append((start, stop))
    start = stop
  return ranges


def check_sample_rate(sample_rate) -> float:
  """Returns `sample_rate` as a float if it lies in (0, 1], else raises ValueError."""
  rate = float(sample_rate)
  if not 0.0 < rate <= 1.0:  # NaN fails this test too
    raise ValueError(f"Partial FC sample_rate must be in (0, 1] (1.0 = every class "
                     f"centre). Received: sample_rate={sample_rate}")
  return rate


def num_sampled(sample_rate: float, num_local: int) -> int:
  """Centres a shard of `num_local` classes uses per step, positives included.

  `round(sample_rate * num_local)`, at least one; the step takes more when
  the batch's positives on the shard alone exceed it. Equal to `num_local`
  means no sampling at all.
  """
  return min(int(num_local), max(1, round(float(sample_rate) * int(num_local))))
