"""`python -m pipeline.wandb_offline`, the name users know: the code lives in pipeline/runlog/wandb_offline.py."""

import sys

from pipeline.runlog.wandb_offline import main

if __name__ == "__main__":
    sys.exit(main())
