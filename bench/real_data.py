"""`make real-data`: the CDNOW purchase log as event-contract JSONL (development and acceptance).

The CDNOW log (every purchase of a cohort of 23,570 first-time buyers of Q1 1997, up to
June 1998) ships inside the PyPI wheel of ``lifetimes``; this script reads it from the wheel
with zipfile (the package is never installed or imported). Two files:

- ``cdnow_sample.jsonl``: ``CDNOW_sample.txt`` (2,357 customers), the development set;
- ``cdnow_acceptance.jsonl``: ``CDNOW_master.txt`` without the sample's customers (21,213),
  the acceptance set. Do not tune on it.

One ``purchase`` per row at noon UTC (the log has dates only), ``quantity`` = number of CDs,
``revenue`` = dollar value. Several rows of one customer on one day get timestamps one second
apart, so every event has its own time; ``user_id`` is the master customer id in both files.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

WHEEL = "Lifetimes-0.11.3-py3-none-any.whl"
SAMPLE = "lifetimes/datasets/CDNOW_sample.txt"
MASTER = "lifetimes/datasets/CDNOW_master.txt"


def parse(text: str, sample: bool) -> Iterator[tuple[str, str, int, float]]:
    """(master customer id, YYYYMMDD, CDs, dollars) per row; the sample has one more column
    (its own id) after the master id, the master file a header line."""
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].isdigit():
            continue
        if sample:
            parts = [parts[0], *parts[2:]]
        cust, day, cds, dollars = parts
        yield cust, day, int(cds), float(dollars)


def to_events(rows: Iterable[tuple[str, str, int, float]]) -> list[dict[str, object]]:
    """Event-contract purchases in time order (noon UTC, +1 s per extra row that day)."""
    seen: Counter[tuple[str, str]] = Counter()
    out = []
    for cust, day, cds, dollars in rows:
        k = seen[cust, day]
        seen[cust, day] += 1
        ts = datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC) + timedelta(seconds=k)
        out.append(
            {
                "event_id": f"cdnow-{cust}-{day}-{k}",
                "user_id": f"c{cust}",
                "event_type": "purchase",
                "ts": ts.isoformat().replace("+00:00", "Z"),
                "quantity": cds,
                "revenue": dollars,
            }
        )
    out.sort(key=lambda e: (e["ts"], e["user_id"]))
    return out


def write(path: Path, events: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    users = len({e["user_id"] for e in events})
    print(f"real-data: wrote {path} ({len(events)} purchases, {users} customers)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("out/real"))
    args = parser.parse_args()
    wheel = args.dir / WHEEL
    if not wheel.is_file():
        print(f"real-data: {wheel} missing; `pip download --no-deps lifetimes==0.11.3 -d "
              f"{args.dir}` fetches it", file=sys.stderr)  # fmt: skip
        return 1
    with zipfile.ZipFile(wheel) as z:
        sample = list(parse(z.read(SAMPLE).decode(), sample=True))
        master = list(parse(z.read(MASTER).decode(), sample=False))
    dev_ids = {row[0] for row in sample}
    write(args.dir / "cdnow_sample.jsonl", to_events(sample))
    write(args.dir / "cdnow_acceptance.jsonl", to_events(r for r in master if r[0] not in dev_ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
