"""The LLM judge: rubrics, pointwise and pairwise runs, statistics."""
