"""`python -m modelport`: the command line."""
from .cli import run

run()
