"""`genericssl prepare` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'prepare' is not implemented yet")
