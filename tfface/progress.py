"""Progress with rate and ETA for every long step, through tqdm.

On a terminal the bar redraws in place. Anywhere else (CI logs, `| tee`,
captured subprocess output) a redraw would garble the file, so the same
progress comes out as plain lines, one every `line_interval` seconds plus
the last one:

  verify synth_val: 1200/2400 images [00:10<00:10, 118.6 images/s]

Every tool and library step that can take more than about 10 s uses this
one helper, so they all look alike.
"""
import os
import sys

import tqdm

# Seconds between plain lines when the stream is not a terminal.
LINE_INTERVAL = 10.0
_PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}]"
_PLAIN_FORMAT_NO_TOTAL = "{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}]"


class _Lines:
  """A file-like stream that turns tqdm's carriage-return redraws into lines."""

  def __init__(self, stream):
    self._stream = stream
    self._last = ""

  def write(self, text):
    for part in text.replace("\r", "\n").split("\n"):
      part = part.strip()
      count = part.split(" [", 1)[0]  # the closing redraw repeats the last count
      if part and count != self._last:
        self._stream.write(part + "\n")
        self._last = count

  def flush(self):
    self._stream.flush()


def is_terminal(stream) -> bool:
  """True when `stream` is an interactive terminal (and TERM is not `dumb`)."""
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def progress(iterable=None, total=None, desc="", unit="it", stream=None,
             line_interval=LINE_INTERVAL, disable=False, **kwargs):
  """A `tqdm` progress bar, or plain periodic lines where the stream is no terminal.

  Args:
    iterable: what to iterate over (optional; else call `.update(n)`).
    total: the expected count (default `len(iterable)` where defined).
    desc: what is counted, shown first (`"verify lfw"`).
    unit: the unit of the count (`"images"`).
    stream: where to write (default stderr).
    line_interval: seconds between plain lines when not on a terminal.
    disable: show nothing (library callers pass their `verbose=False`).
    **kwargs: passed to `tqdm.tqdm`.

  Returns:
    A `tqdm.tqdm`; use it as an iterator or a context manager.
  """
  stream = stream or sys.stderr
  if is_terminal(stream):
    return tqdm.tqdm(iterable, total=total, desc=desc, unit=f" {unit}", file=stream,
                     disable=disable, dynamic_ncols=True, **kwargs)
  if total is None and iterable is not None and hasattr(iterable, "__len__"):
    total = len(iterable)
  fmt = _PLAIN_FORMAT if total else _PLAIN_FORMAT_NO_TOTAL
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=f" {unit}", file=_Lines(stream),
                   disable=disable, mininterval=line_interval, maxinterval=line_interval,
                   miniters=1, bar_format=fmt, ascii=True, **kwargs)
