"""The FAQ chatbot inside Triton: stored FAQ and index, request checks and routing, prompts, BLS calls, the two served models."""
