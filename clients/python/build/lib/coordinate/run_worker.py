"""``coordinate_worker``: runs a :class:`coordinate.workers.ForkWorker` until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from .config import load_config
from .workers import ForkWorker, run_worker


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coordinate_worker", description="Run coordinate work units in child processes until SIGTERM.")
    parser.add_argument("-c", "--config", metavar="FILE", help="YAML file with a coordinate: block")
    parser.add_argument("--address", help="coordinated's host:port (overrides the configuration)")
    parser.add_argument("-n", "--num-workers", type=int, help="child processes (fork_worker.num_workers)")
    parser.add_argument("--work-spec", action="append", dest="work_specs", metavar="NAME",
                        help="only run this work spec (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config) if args.config else {}
    if args.address:
        config["address"] = args.address
    if args.num_workers is not None:
        config.setdefault("fork_worker", {})["num_workers"] = args.num_workers
    if args.work_specs:
        config["work_spec_names"] = args.work_specs
    run_worker(ForkWorker, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
