"""Write the shipped device profiles (testbed/data/devices/*.json) from the paper's tables.

Usage: .venv/bin/python scripts/make_device_profiles.py
The Table 1 platforms' head/tail shares come from testbed/data/devices/measured/
project-host-1thread.json (made with `testbed profile --models <all seven> --frames 6
--warmup 1 --threads 1`); see analysis/paper_devices.py.
"""

import json
from pathlib import Path

from analysis.paper_devices import shipped

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "testbed" / "data" / "devices"
SHARES = DEVICES / "measured" / "project-host-1thread.json"


def main() -> None:
    for name, data in shipped(json.loads(SHARES.read_text())).items():
        path = DEVICES / f"{name}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
