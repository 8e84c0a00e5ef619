"""BERT-family encoders (BERT, RoBERTa, DistilBERT, MiniLM): export, parity, int8, the encoder pipeline's configs."""
