"""GPT-2 and T5 inside Triton: sampling parameters, KV-cache models, the continuous-batching engine, the decoupled step."""
