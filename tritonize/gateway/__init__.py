"""An OpenAI-compatible HTTP API in front of a Triton server's tritonize pipelines.

`tritonize gateway --url HOST:PORT` runs it; `build_app(GatewaySettings(url))` builds the ASGI app.
Layout (vLLM's entrypoints shape): `protocol.py` (pydantic bodies), `routers.py` (thin routes),
`serving/` (handlers calling the project's async clients; completions and chat have one for generators
and one for chatbots), `registry.py` (what the server serves), `errors.py` (OpenAI's error envelope),
`security.py` (body limit, API keys), `streaming.py` (SSE and cancellation on disconnect), `chat.py`
(chat templates).
"""
