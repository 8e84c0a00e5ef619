"""GPT-2 and T5: export with KV cache, parity, the generator's config, tiny generators for demo and tests."""
