"""``python -m mixvae.app.torchrun``: torchrun, ending as mixvae ends when the workers stop on bad input.

torchrun itself ends every failed run the same way: its elastic agent logs the failure, raises
``ChildFailedError`` (a traceback and a report of every worker's exit code) and exits with 1,
whatever the workers' exit codes were. When mixvae's workers stop on bad input they have already
said why, in one line (exit code 2), or that training diverged (exit code 3); this launcher then
adds nothing and exits with that code. Any other failure (a crash, a signal) is reported exactly
as torchrun reports it. Same arguments as torchrun::

    python -m mixvae.app.torchrun --standalone --nproc_per_node 4 -m mixvae train CONFIG --out RUN
"""
from __future__ import annotations

import logging
import sys

MIXVAE_EXITS = (2, 3)   # the workers' one-line ends: bad input, diverged training
# where torchrun's agent logs a worker's failure and the stopping of the others
_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.distributed.elastic.agent.server.api",
                  "torch.distributed.elastic.agent.server.local_elastic_agent", "torch.distributed.launcher.api")


class _HoldWarnings(logging.Filter):
    """Keeps back the agent's warnings and errors until the run's end shows whether they are news."""

    def __init__(self):
        super().__init__()
        self.held: list[tuple[logging.Logger, logging.LogRecord]] = []
        self.logger = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.held.append((self.logger, record))
            return False
        return True


def main(argv=None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    filters = []
    for name in _AGENT_LOGGERS:
        f = _HoldWarnings()
        f.logger = logging.getLogger(name)
        f.logger.addFilter(f)
        filters.append(f)
    try:
        run(args)
        code = 0
    except ChildFailedError as e:
        _, root = e.get_first_failure()
        if root.exitcode not in MIXVAE_EXITS:
            _release(filters, replay=True)
            raise
        code = root.exitcode
    except BaseException:
        _release(filters, replay=True)
        raise
    _release(filters, replay=code not in MIXVAE_EXITS)
    return code


def _release(filters: list[_HoldWarnings], replay: bool) -> None:
    for f in filters:
        f.logger.removeFilter(f)
        if replay:
            for logger, record in f.held:
                logger.handle(record)
        f.held.clear()


if __name__ == "__main__":
    sys.exit(main())
