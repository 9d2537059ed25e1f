from model.artifacts import run_cli

from .qat import main

run_cli(main)
