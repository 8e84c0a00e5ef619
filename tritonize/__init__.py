"""tritonize: Hugging Face checkpoints to measured Triton Inference Server endpoints."""

__version__ = "0.1.0"
