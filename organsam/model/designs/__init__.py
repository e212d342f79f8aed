"""The text-prompted designs: one module each, named after the design, whose builder carries
``@register_design(name, ConfigClass)`` (:mod:`organsam.registry`); the module docstring's first line is the
design's summary (``organsam designs``). Adding a design is adding a module here (and, to change its config's
defaults, a preset ``organsam/configs/<name>.yaml``).

Build one with ``organsam.registry.build_design(name, overrides)``; modules are imported on demand.
"""
