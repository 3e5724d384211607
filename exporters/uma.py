"""python -m exporters.uma: the UMA/host memory, PSI, CPU and serving processes collector alone, on exporters.ports.uma."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(only="uma"))
