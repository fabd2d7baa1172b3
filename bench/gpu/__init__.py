"""The GPU benchmark of the HiStream engine, split by concept; `bench/bench_gpu.py` is the entry point."""
