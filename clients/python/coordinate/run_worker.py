"""``coordinate_worker``: runs a :class:`coordinate.workers.ForkWorker` until SIGTERM.

The command line of 0.1.5's ``coordinate_worker``: ``-c/--config FILE``, ``--pidfile FILE``, ``--logpath FILE``
and ``--foreground``; without ``--foreground`` the worker detaches and runs as a daemon, as 0.1.5's did. Added
here: ``--address``, ``-n/--num-workers``, ``--work-spec NAME`` and ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from typing import Any, Optional, Sequence

from .config import load_config
from .workers import ForkWorker, run_worker


def absolute_path(text: str) -> str:
    """0.1.5's check: an absolute path in an existing directory."""
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError("{0!r} is not an absolute path".format(text))
    if not os.path.exists(os.path.dirname(text)):
        raise argparse.ArgumentTypeError("path {0!r} does not exist".format(text))
    return text


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="coordinate_worker", description="run a coordinate work-handling daemon")
    result.add_argument("-c", "--config", metavar="FILE", help="YAML file with a coordinate: block")
    result.add_argument("--pidfile", metavar="FILE", type=absolute_path, help="file to hold process ID of worker")
    result.add_argument("--logpath", metavar="FILE", type=absolute_path, help="file to receive local logs")
    result.add_argument("--foreground", action="store_true", help="do not run the worker as a daemon")
    result.add_argument("--address", help="coordinated's host:port (overrides the configuration)")
    result.add_argument("-n", "--num-workers", type=int, help="child processes (fork_worker.num_workers)")
    result.add_argument("--work-spec", action="append", dest="work_specs", metavar="NAME",
                        help="only run this work spec (repeatable)")
    result.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return result


def detach() -> None:
    """The classic double fork: the caller returns at once, the worker runs on in its own session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(devnull, stream)
    os.close(devnull)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    config: dict[str, Any] = load_config(args.config) if args.config else {}
    if args.address:
        config["address"] = args.address
    if args.num_workers is not None:
        config.setdefault("fork_worker", {})["num_workers"] = args.num_workers
    if args.work_specs:
        config["work_spec_names"] = args.work_specs
    if not args.foreground:
        detach()
    handlers: list[logging.Handler] = []
    if args.logpath:
        handlers.append(logging.handlers.RotatingFileHandler(args.logpath, maxBytes=10_000_000, backupCount=3))
    if args.foreground:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        handlers=handlers or [logging.NullHandler()])
    if args.pidfile:
        with open(args.pidfile, "w") as stream:
            stream.write(str(os.getpid()))
    try:
        run_worker(ForkWorker, config)
    finally:
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
