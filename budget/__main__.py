from contract import run_cli

from .gate import main

run_cli(main)
