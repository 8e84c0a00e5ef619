import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tritonize.server.stubs import REGION_PREFIX


@pytest.fixture()
def foreign_region() -> Iterator[str]:
    """A /dev/shm region no stub of the server under test holds (as if another server's on this host, or
    one leaked before), present for the whole test: a stop must leave it alone. Yields its name."""
    path = Path("/dev/shm") / f"{REGION_PREFIX}tritonize-test-{uuid.uuid4()}"
    path.write_bytes(b"\0" * 4096)
    try:
        yield path.name
    finally:
        path.unlink(missing_ok=True)
