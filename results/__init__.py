"""edgevit results: measurement records (JSONL), reports and plots; peers/ compares edgevit with other runtimes,
data/ keeps the measured results."""
