"""All connector benchmarks in one run: Modbus, then OPC UA (each prints its own table).

    .venv/bin/python bench/connectors.py

Modbus: registers/s through the connector beside a bare pymodbus loop on the same server.
OPC UA: value changes/s through the subscription beside a bare asyncua handler, and the
time to browse and import 5,000 nodes beside a naive per-node walk.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Run each connector bench as its own process, so one's threads never slow the other."""
    for script in ("connectors_modbus.py", "connectors_opcua.py"):
        print(f"\n=== {script} ===", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:2]], check=True)


if __name__ == "__main__":
    main()
