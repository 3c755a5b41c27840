"""`genericssl train` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'train' is not implemented yet")
