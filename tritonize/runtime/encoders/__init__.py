"""BERT-family encoders inside Triton: tokenizer step, ONNX Runtime model step, postprocess steps."""
