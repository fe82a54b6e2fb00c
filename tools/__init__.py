"""Tools for a person at a terminal and for the local run: the CLI, replay and the route table.

Apart from the product: `responder` never imports them (an import contract in the test suite
says so), they import the product and the handlers.
"""
