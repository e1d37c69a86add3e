"""Building blocks of the ``classify`` processor (pure functions and small state machines).

``processors/classify.py`` wires them together; each module here is usable on its own.
The package name starts with a letter, so ``errorgate.processors`` imports it on start-up;
nothing here registers a component.
"""
