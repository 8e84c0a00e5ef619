"""Keep the libraries' chatter out of the terminal during a conversion.

An export prints dozens of lines that are not ours and need no action: torch's tracer and constant
folding warnings, transformers' and optimum's log records ("requires accelerate", "`torch_dtype` is
deprecated"), and C++ warnings written straight to file descriptor 2. Inside `library_output(path)`
all of them go to the log file instead: Python warnings, log records of every logger, `sys.stderr` and
the process's stderr descriptor. Our progress lines (the converters' `log`, printed on stdout) stay in
the terminal. An exception leaving the block is written to the file with its traceback, so the command
can say it in one paragraph and point at the file for the rest.

fd 2 is process-wide: other threads' stderr goes to the file too while a conversion runs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# One folder per user: a shared /tmp folder made by one user would not be writable by the next.
LOG_DIR = Path(tempfile.gettempdir()) / f"tritonize-logs-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def log_path(label: str) -> Path:
    """A new file for one conversion's library messages, e.g. /tmp/tritonize-logs-1000/convert-gpt2-20250101-120000-4242.log."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[-60:] or "model"
    return LOG_DIR / f"convert-{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


@contextmanager
def library_output(path: Path, verbose: bool = False) -> Iterator[Path | None]:
    """Library warnings and logs into `path` (yielded); with `verbose`, nothing changes (yields None)."""
    if verbose:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as file:
        handler = logging.StreamHandler(file)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        saved_stderr, saved_fd = sys.stderr, os.dup(2)
        sys.stderr.flush()
        os.dup2(file.fileno(), 2)
        sys.stderr = file
        root.addHandler(handler)
        try:
            with warnings.catch_warnings(), _library_loggers_to(handler):
                warnings.simplefilter("default")
                warnings.showwarning = lambda message, category, filename, lineno, f=None, line=None: file.write(
                    warnings.formatwarning(message, category, filename, lineno, line))
                yield path
        except BaseException:
            file.write("\n" + traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            file.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sys.stderr = saved_stderr
    if path.stat().st_size == 0:  # nothing said (e.g. a reused conversion): leave no empty file behind
        path.unlink()


LIBRARY_LOGGERS = ("transformers", "optimum", "torch", "onnx", "onnxruntime", "huggingface_hub")


@contextmanager
def _library_loggers_to(handler: logging.Handler) -> Iterator[None]:
    """transformers and optimum log through their own handlers (bound to the stderr of their import
    time, which may not be fd 2): point those loggers at the file for the duration."""
    saved = {}
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
