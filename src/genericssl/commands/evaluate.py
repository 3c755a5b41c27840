"""`genericssl evaluate` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'evaluate' is not implemented yet")
