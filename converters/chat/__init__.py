"""The FAQ chatbot: read and check the FAQ, embed its questions with the served embedder's own files, build the index, write the two models."""
