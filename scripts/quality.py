"""`python scripts/quality.py [--minutes 3 6 12] …`: the same as the `wavenet-quality` console
script (`make quality`)."""

from wavenet.cli import quality_main

if __name__ == "__main__":
    quality_main()
