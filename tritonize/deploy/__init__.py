"""`tritonize deploy`: deployment manifests generated from a capacity plan (`tritonize plan` results)."""
