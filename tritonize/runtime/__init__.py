"""Code that runs inside Triton's Python backend; served models import their classes from here."""
