from contract import run_cli

from .cli import main

run_cli(main)
