"""python -m exporters.nvme: the NVMe/diskstats + SMART collector alone, on exporters.ports.nvme."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(only="nvme"))
