"""`python scripts/sample.py key=value …`: the same as the `wavenet-sample` console script."""

from wavenet.cli import sample_main

if __name__ == "__main__":
    sample_main()
