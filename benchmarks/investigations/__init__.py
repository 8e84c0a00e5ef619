"""Investigations that have served their purpose, kept runnable beside their findings (docs/performance.md).

Outside the wheel; run from the checkout: `python -m benchmarks.investigations.NAME`."""
