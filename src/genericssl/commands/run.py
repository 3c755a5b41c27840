"""`genericssl run` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'run' is not implemented yet")
