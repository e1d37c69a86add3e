"""errorgate benchmarks (``make bench``): ratios against a bare pass-through proxy, side by side."""
