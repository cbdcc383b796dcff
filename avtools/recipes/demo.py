"""`demo`: the synthetic clips of `avtools.demo_media` (written into the avtools cache by `avtools demo` and
`avtools build-dataset demo` before planning), read like the `folder` recipe with a quarter held out."""
from __future__ import annotations

from avtools.recipes import RecipeError, RecipeOptions, recipe
from avtools.recipes.folder import folder


@recipe("demo")
def demo(definition: dict, options: RecipeOptions):
    if options.source is None:
        raise RecipeError("demo: no media folder; `avtools build-dataset demo` writes the clips first")
    return folder(definition, RecipeOptions(source=options.source, val_fraction=0.25))
