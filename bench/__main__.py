"""Run every benchmark: ``python -m bench`` (full, minutes) or ``python -m bench --smoke`` (seconds).

The smoke mode runs each benchmark on tiny inputs and asserts only that it worked, never a timing,
so the benchmarks never rot. Full results are printed and written to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import (
    amqp_e2e,
    calendar_e2e,
    calendar_lateness,
    client_hop,
    kafka_e2e,
    mqtt_e2e,
    nats_e2e,
    stream_throughput,
    webhook_e2e,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="tiny inputs, no timing claims")
    parser.add_argument("--only", default="", help="run only benchmarks whose module name contains this")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for module in (
        stream_throughput,
        calendar_lateness,
        calendar_e2e,
        client_hop,
        webhook_e2e,
        nats_e2e,
        kafka_e2e,
        amqp_e2e,
        mqtt_e2e,
    ):
        if args.only and args.only not in module.__name__:
            continue
        started = time.perf_counter()
        outcome = module.run(args.smoke)
        for result in outcome if isinstance(outcome, list) else [outcome]:
            result["wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps(result))
            results.append(result)
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    print(f"bench: {len(results)} benchmark result(s){' (smoke mode)' if args.smoke else ''}")


if __name__ == "__main__":
    main()
