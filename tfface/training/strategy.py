"""Choosing the `tf.distribute` strategy: one device, all local devices, or many machines.

`--strategy=auto` picks MultiWorkerMirroredStrategy when `TF_CONFIG`
describes more than one worker, MirroredStrategy when there are several
GPUs (or `--cpu_replicas` > 1), and one device otherwise.

`--cpu_replicas=N` splits the host CPU into N logical devices so that the
mirrored code path runs (and is tested) without GPUs. Logical devices must
be configured before TensorFlow initializes its devices, so
`configure_devices` has to run before anything else touches TensorFlow ops,
and MultiWorkerMirroredStrategy must likewise be created first.
"""
import json
import logging
import os

import tensorflow as tf

_LOG = logging.getLogger(__name__)


def cluster_workers() -> int:
  """Number of workers (chief included) that `TF_CONFIG` describes; 1 without it."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return 1
  try:
    cluster = json.loads(raw).get("cluster", {})
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e})") from e
  return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def configure_devices(cpu_replicas: int = 0):
  """Splits the CPU into `cpu_replicas` logical devices (before TF initializes devices).

  Raises:
    ValueError: TensorFlow's devices were already initialized.
  """
  if cpu_replicas and cpu_replicas > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    except RuntimeError as e:
      raise ValueError(f"--cpu_replicas={cpu_replicas} must be applied before TensorFlow "
                       f"initializes its devices ({e})") from e


def create_strategy(name: str = "auto", cpu_replicas: int = 0):
  """Builds the distribution strategy of a run.

  Args:
    name: `auto`, `one_device`, `mirrored` or `multi_worker`.
    cpu_replicas: logical CPU devices to create (0 or 1: the CPU is one device).

  Returns:
    A `tf.distribute.Strategy`.

  Raises:
    ValueError: an unknown name, or `multi_worker` without a TF_CONFIG cluster.
  """
  workers = cluster_workers()
  if name == "auto":
    gpus = tf.config.list_physical_devices("GPU")
    if workers > 1:
      name = "multi_worker"
    elif len(gpus) > 1 or cpu_replicas > 1:
      name = "mirrored"
    else:
      name = "one_device"
  if name == "multi_worker":
    if workers < 2:
      raise ValueError("--strategy=multi_worker needs TF_CONFIG describing a cluster "
                       "of two or more workers (see docs/distributed.md)")
    # Collectives over gRPC/ring work on CPU and GPU alike; NCCL is picked
    # automatically for GPUs.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  else:
    configure_devices(cpu_replicas)
    if name == "mirrored":
      devices = _local_devices(cpu_replicas)
      strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "one_device":
      gpus = tf.config.list_logical_devices("GPU")
      strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    else:
      raise ValueError(f"unknown strategy {name!r}; expected auto, one_device, "
                       "mirrored or multi_worker")
  _LOG.info("strategy %s with %d replica(s)", type(strategy).__name__,
            strategy.num_replicas_in_sync)
  return strategy


def _local_devices(cpu_replicas):
  gpus = tf.config.list_logical_devices("GPU")
  if gpus:
    return [d.name for d in gpus]
  return [d.name for d in tf.config.list_logical_devices("CPU")][:max(cpu_replicas, 1)]


def is_chief(strategy) -> bool:
  """True on the worker that writes checkpoints, summaries and models."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                  "chief" not in resolver.cluster_spec().as_dict())


def worker_index(strategy) -> int:
  """This worker's task id (0 when not multi-worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  return int(resolver.task_id or 0) if resolver is not None else 0


def num_workers(strategy) -> int:
  """Workers (machines) the strategy spans: 1 unless multi-worker."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def barrier(strategy):
  """A callable that returns once every worker has called it (a tiny all-reduce)."""

  @tf.function
  def sync():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.constant(1.0)))

  def wait():
    for value in strategy.experimental_local_results(sync()):
      value.numpy()

  return wait
