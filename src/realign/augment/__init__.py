"""Data augmentation beside reformatting: rephrase documents (WRAP), generate instruction/response
pairs from documents, and keep only records a judge scores high enough (phi-1 style filtering).

- `documents.py`: read documents (JSONL / JSON / Parquet with a text field, or .txt/.md files)
  and cut them into chunks of at most ~300 tokens;
- `rephrase.py`: one chunk in one style of the `wrap` criteria pack; the real/synthetic mix;
- `generate.py`: N grounded pairs per chunk, optionally typed by task type;
- `dedup.py`: near-duplicate removal (MinHash over word shingles, verified by Jaccard);
- `quality_filter.py`: pointwise judge scores (reusing `realign.judge`) decide what stays;
- `runner.py`: the resumable, ordered, bounded-concurrency loop the three commands share.
"""
