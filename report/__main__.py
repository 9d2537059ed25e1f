from contract import run_cli

from .page import main

run_cli(main)
