"""Run ``nasforge ARGS`` as a torchrun rank; rank 1 dies (os._exit) when its epoch 1 starts."""

import os
import sys

from nasforge.oneshot import loop

_epoch = loop.SearchLoop.epoch


def epoch(self, index, *args, **kwargs):
    if index == 1 and os.environ.get("RANK") == "1":
        os._exit(9)
    return _epoch(self, index, *args, **kwargs)


loop.SearchLoop.epoch = epoch

if __name__ == "__main__":
    from nasforge.cli import main

    sys.argv = ["nasforge", *sys.argv[1:]]
    main()
