"""The stages one record passes through: classify, retrieve, rewrite, filter."""
