"""Bad input gets a clear error naming the field and the limit; the server stays ready."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client import TritonizeError
from tests.conftest import EMBEDDER, EMBEDDER_FUSED
from tests.torch_models import EMBEDDER_TORCH

BOTH = pytest.mark.parametrize("model", [EMBEDDER, EMBEDDER_FUSED, EMBEDDER_TORCH])
FLAVOURS = pytest.mark.parametrize("model", [EMBEDDER, EMBEDDER_FUSED])

pytestmark = pytest.mark.usefixtures("still_serving")


def raw_text(raw_grpc, data: np.ndarray, dtype: str = "BYTES", model: str = EMBEDDER):
    inp = grpcclient.InferInput("TEXT", list(data.shape), dtype)
    inp.set_data_from_numpy(data)
    return raw_grpc.infer(model, [inp])


@BOTH
def test_empty_batch_is_rejected(grpc_client, raw_grpc, model):
    assert grpc_client.embed([], model=model).shape == (0, 384)  # the client sends nothing
    with pytest.raises(InferenceServerException, match="TEXT"):
        raw_text(raw_grpc, np.zeros((0, 1), dtype=object), model=model)


@BOTH
def test_empty_string_is_a_defined_result(grpc_client, model):
    e = grpc_client.embed([""], model=model)
    assert e.shape == (1, 384) and np.isfinite(e).all()


@BOTH
def test_huge_text_is_truncated_not_a_crash(grpc_client, model):
    huge = "word " * 20_000  # 100,000 characters, far beyond 256 tokens
    e = grpc_client.embed([huge, "word " * 300], model=model)
    assert e.shape == (2, 384)
    np.testing.assert_allclose(e[0], e[1], atol=1e-5)  # both cut to the same first 256 tokens


@FLAVOURS
def test_text_over_the_byte_limit_names_field_and_limit(grpc_client, model):
    with pytest.raises(TritonizeError, match=r"TEXT\[1\] is 1,500,000 bytes; the limit is 1,000,000"):
        grpc_client.embed(["fine", "x" * 1_500_000], model=model)


@FLAVOURS
def test_non_utf8_bytes_are_rejected(grpc_client, model):
    with pytest.raises(TritonizeError, match=r"TEXT\[1\] is not valid UTF-8 \(byte 0xff at offset 3\)") as e:
        grpc_client.embed([b"good", b"bad\xff\xfe"], model=model)
    assert e.value.status == "INVALID_ARG"  # Triton's code, the same over HTTP (tests/client/test_errors.py)


@FLAVOURS
def test_wrong_datatype_is_rejected_by_name(raw_grpc, model):
    with pytest.raises(InferenceServerException, match="TEXT") as e:
        raw_text(raw_grpc, np.ones((1, 1), dtype=np.float32), dtype="FP32", model=model)
    assert "data-type" in str(e.value) or "datatype" in str(e.value).lower()


@FLAVOURS
def test_wrong_shape_is_rejected(raw_grpc, model):
    with pytest.raises(InferenceServerException, match="TEXT"):
        raw_text(raw_grpc, np.array([[b"a", b"b"]], dtype=object), model=model)


@BOTH
def test_more_rows_than_max_batch_size_are_rejected(raw_grpc, model):
    with pytest.raises(InferenceServerException, match="batch") as e:
        raw_text(raw_grpc, np.array([[b"x"]] * 17, dtype=object), model=model)
    assert "16" in str(e.value)


@BOTH
def test_a_bad_request_does_not_fail_its_neighbours(server, model):
    """Good and bad requests batched into the same execution: only the bad one fails."""
    import asyncio

    from tritonize.client import AsyncClient

    async def run():
        async with AsyncClient(server.grpc_url) as c:
            calls = [c.embed([b"ok \xff" if i % 4 == 0 else f"request {i}".encode()], model=model) for i in range(24)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    for i, r in enumerate(results):
        if i % 4 == 0:
            assert isinstance(r, TritonizeError) and "UTF-8" in r.message
        else:
            assert isinstance(r, np.ndarray) and r.shape == (1, 384)
