"""`genericssl bench` (not implemented yet)."""
from ..errors import UserError


def add_arguments(parser):
    pass


def main(args):
    raise UserError("'bench' is not implemented yet")
