from contract import run_cli

from .qat import main

run_cli(main)
