"""The `mct-logger` command.

Example: `mct-logger demo --logdir logs`
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mct-logger",
        description="Keras 3 post-training quantization, every stage visible in TensorBoard.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train a small CNN on scikit-learn's digits and quantize it"
    )
    demo.add_argument("--logdir", default="logs", help="where logs and the quantized model go")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.command == "demo":
        if args.epochs < 1:
            parser.error("--epochs must be at least 1")
        from mct_logger.demo import run_demo

        run_demo(args.logdir, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
