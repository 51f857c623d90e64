"""`python -m pipeline.report`, the name users know: the code lives in pipeline/runlog/report.py."""

import sys

from pipeline.runlog.report import main

if __name__ == "__main__":
    sys.exit(main())
