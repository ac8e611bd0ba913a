"""What models train on: the corpus (built-in, text folders, JSONL, Parquet), the SentencePiece
tokenizer, packed batches, and atomic file writes (``io``)."""
