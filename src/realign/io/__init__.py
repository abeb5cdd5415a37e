"""Reading and writing datasets.

`formats` (the shapes, no I/O); `read` opens an input as a stream of objects (`objects`: the
stream and the checks each record passes; `jsonstream`: `.json`/`.jsonl` text; `parquet`;
`hf`: Hugging Face datasets) and turns them into records; `write` writes records back;
`errors` holds what a bad record becomes.
"""
