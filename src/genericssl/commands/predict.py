"""`genericssl predict` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'predict' is not implemented yet")
