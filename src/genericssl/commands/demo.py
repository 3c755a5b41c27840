"""`genericssl demo` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'demo' is not implemented yet")
