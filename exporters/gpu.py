"""python -m exporters.gpu: the GPU over NVML collector alone, on exporters.ports.gpu."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(only="gpu"))
