"""The diffusion zoo: the built-in `digits` task (experts, student init, classifier), the
text-to-image `shapes` task (SD3 pipelines, prompt judge), and the supervised flow-matching and
classifier training they use. Importing it registers `digits` and `shapes`."""

from . import digits, shapes  # noqa: F401  (registers the zoo entries)
