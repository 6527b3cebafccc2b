"""The diffusion zoo: the built-in `digits` task (experts, student init, classifier), and the
supervised flow-matching and classifier training it uses. Importing it registers `digits`."""

from . import digits  # noqa: F401  (registers the zoo entry)
