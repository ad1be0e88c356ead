"""`python scripts/train.py key=value …`: the same as the `wavenet-train` console script."""

from wavenet.cli import train_main

if __name__ == "__main__":
    train_main()
