"""Files that appear whole or not at all: a temporary name beside, then a rename.

Every file tfface writes goes through here (or through a writer class using
`CommitOnSuccess`), so a crash, a kill or a bad input never leaves a
truncated file under a final name. The temporary name carries the process
id, so concurrent writers of the same file do not collide; `os.replace` is
atomic within a file system.
"""
import contextlib
import json
import os
import shutil


def temporary_name(path: str, suffix: str = "") -> str:
  """`PATH.tmp-PID[SUFFIX]`: where `path` is written before its rename."""
  return f"{path}.tmp-{os.getpid()}{suffix}"


@contextlib.contextmanager
def replacing(path, suffix: str = "", make_dirs: bool = False):
  """Yields a temporary path that becomes `path` if the block succeeds.

  Args:
    path: the final file name.
    suffix: appended to the temporary name, for writers that insist on an
      extension (Keras on `.keras`, Matplotlib on `.png`).
    make_dirs: create the parent directory first.

  On an exception the temporary file is removed and `path` is untouched.
  """
  path = os.fspath(path)
  if make_dirs:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = temporary_name(path, suffix)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def replacing_dir(path, overwrite: bool = False, merge: bool = False):
  """Yields a temporary directory beside `path` that becomes `path` if the block succeeds.

  For tools that write a tree of files: the tree appears under its final
  name whole, by one rename, or not at all.

  Args:
    path: the final directory (its parent is created if needed).
    overwrite: accept an existing non-empty `path`. It is then replaced
      whole, after the block succeeded; with `merge`, only the entries the
      block wrote replace those of the same name and the others stay.
    merge: move the block's entries into an existing `path` one by one (for a
      fixed set of output files in a directory that may hold others).

  Raises:
    ValueError: `path` is not a directory, or a non-empty one without
      `overwrite` (checked before the block runs).

  On an exception the temporary directory is removed and `path` is untouched.
  """
  shown = os.fspath(path)
  target = os.path.abspath(shown)  # no trailing slash: the temporary goes beside it
  if os.path.lexists(target) and not os.path.isdir(target):
    raise ValueError(f"{shown}: exists and is not a directory")
  if os.path.isdir(target) and os.listdir(target) and not overwrite:
    raise ValueError(f"{shown}: already exists and is not empty; pass --overwrite to "
                     "replace it")
  tmp = temporary_name(target)
  if os.path.isdir(tmp):
    shutil.rmtree(tmp)  # left by a killed process that had the same id
  os.makedirs(tmp)
  try:
    yield tmp
    if merge and os.path.isdir(target):
      for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(target, name))
    elif os.path.isdir(target) and os.listdir(target):
      old = temporary_name(target, ".old")
      os.replace(target, old)
      try:
        os.replace(tmp, target)
      except BaseException:
        os.replace(old, target)
        raise
      shutil.rmtree(old)
    else:
      os.replace(tmp, target)  # onto nothing or an empty directory
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)


def write_bytes(path, data, sync: bool = False, make_dirs: bool = False):
  """Writes `data` (bytes-like) to `path` atomically; `sync` fsyncs before the rename."""
  with replacing(path, make_dirs=make_dirs) as tmp, open(tmp, "wb") as f:
    f.write(data)
    if sync:
      f.flush()
      os.fsync(f.fileno())


def write_text(path, text: str, sync: bool = False, make_dirs: bool = False):
  """Writes `text` to `path` atomically."""
  write_bytes(path, text.encode("utf-8"), sync=sync, make_dirs=make_dirs)


def write_json(path, obj, indent: int | None = None, sync: bool = False,
               make_dirs: bool = False):
  """Writes `obj` as JSON (sorted keys; a final newline when indented) atomically."""
  text = json.dumps(obj, indent=indent, sort_keys=True) + ("\n" if indent else "")
  write_text(path, text, sync=sync, make_dirs=make_dirs)


class CommitOnSuccess:
  """Mixin for writers with `close()` (commit) and `abort()` (discard).

  Used as a context manager, the writer commits when the block ends
  normally and discards everything when it raises.
  """

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *exc):
    if exc_type is None:
      self.close()
    else:
      self.abort()


# Checks that an output path can be written, before the work that produces it:
# an evaluation or an embedding run takes minutes to hours, and an output flag
# that names a directory where a file is wanted (or the reverse), or a parent
# that cannot be created, should fail before it, as one line naming the flag
# and the path. The checks create nothing: the writers create missing parents.
def _check_creatable(path, flag):
  """The nearest existing ancestor of `path` is a directory this process may write in."""
  ancestor = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise ValueError(f"{flag}={path}: cannot be created, {ancestor} is a file, "
                     "not a directory")
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise ValueError(f"{flag}={path}: cannot be created, no permission to write in "
                     f"{ancestor}")


def check_output_file(path, flag):
  """Raises ValueError unless `path` can be written as a file.

  Args:
    path: the output file (it may exist: it will be replaced).
    flag: what the message calls it, e.g. `--output_json`.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise ValueError(f"{flag}={path}: is a directory; expected a file name")
  if os.path.exists(path):
    parent = os.path.dirname(os.path.abspath(path))
    if not os.access(parent, os.W_OK | os.X_OK):
      raise ValueError(f"{flag}={path}: cannot be replaced, no permission to write in "
                       f"{parent}")
    return
  _check_creatable(path, flag)


def check_output_directory(path, flag, files=()):
  """Raises ValueError unless `path` is or can become a directory holding `files`.

  Args:
    path: the output directory.
    flag: what the message calls it, e.g. `--roc_dir`.
    files: names of the files that will be written in it.
  """
  path = os.fspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{flag}={path}: is a file; expected a directory")
  if not os.path.isdir(path):
    _check_creatable(path, flag)
    return
  for name in files:
    check_output_file(os.path.join(path, name), flag)
