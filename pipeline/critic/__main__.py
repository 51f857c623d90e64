"""python -m pipeline.critic {judge,data,train} ...

  judge TASK --ref REF.png --pred PRED.png [--code FILE] [...]     one judgement + reward (see judge_cli.py)
  data  --out DIR [--config critic-data.yaml] [key.path=value ...] build a critic SFT set (data_builder.py)
  train [--config configs/critic/tiny.yaml] [key.path=value ...]  DeepSpeed SFT of a critic on Ray (training/)
"""

from __future__ import annotations

import sys

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "judge":
        from pipeline.critic.judge_cli import main as judge

        return judge(rest)
    if command == "data":
        from pipeline.critic.training.data_cli import main as data

        return data(rest)
    if command == "train":
        from pipeline.critic.training.cli import main as train

        return train(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
