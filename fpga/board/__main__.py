from contract import run_cli

from .build import main

run_cli(main)
