"""VITS text-to-speech: export with seeded noise and a padding-invariant vocoder, parity, the speech pipeline's configs."""
