"""The engine a served step runs: the contract's `EngineSpec` (tritonize.contract.engines), under the name
the runtime's steps, the benchmarks and the tests import it by."""

from tritonize.contract.engines import EngineSpec

__all__ = ["EngineSpec"]
