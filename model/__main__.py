"""``python -m model train|evaluate ...``: the float stage's entry point."""
import sys

from contract import run_cli

USAGE = """usage: python -m model {train,evaluate} [options]

  train     train a float SqueezeNet (python -m model train --help)
  evaluate  evaluate a float checkpoint on the test set (python -m model evaluate --help)"""

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "train":
        from .train import main
    elif command in ("evaluate", "eval"):
        from .evaluate import main
    else:
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    run_cli(main, rest)
