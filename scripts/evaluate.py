"""`python scripts/evaluate.py key=value …`: the same as the `wavenet-evaluate` console script."""

from wavenet.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
