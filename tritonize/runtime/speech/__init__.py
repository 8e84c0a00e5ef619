"""VITS speech inside Triton: text normalisation, front end, synthesis step, audio encoder, sentence streaming."""
