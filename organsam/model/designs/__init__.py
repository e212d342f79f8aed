"""The text-prompted designs, one module each, registered in :mod:`organsam.registry`.

* ``crisp_sam2``: :mod:`organsam.model.designs.crisp_sam2`
* ``seg_sam``: :mod:`organsam.model.designs.seg_sam`
* ``pg_sam``: :mod:`organsam.model.designs.pg_sam`
* ``organsam``: :mod:`organsam.model.designs.organsam`
* ``organ_prompts``: :mod:`organsam.model.designs.organ_prompts` (the shipped default checkpoint)

Build one with ``organsam.registry.build_design(name, overrides)``; modules are imported on demand.
"""
