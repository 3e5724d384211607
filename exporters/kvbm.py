"""python -m exporters.kvbm: the KVBM tier metrics collector alone, on exporters.ports.kvbm."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(only="kvbm"))
