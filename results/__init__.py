"""edgevit results: measurement records (JSONL), reports and plots; stored results live beside the code."""
