"""`python scripts/bench.py key=value …`: the same as the `wavenet-bench` console script."""

from wavenet.cli import bench_main

if __name__ == "__main__":
    bench_main()
