"""Publishing a `realign run` output to the Hugging Face Hub: Parquet shards plus a dataset
card (`card.py` gathers and renders the card; `push.py` talks to the Hub)."""
