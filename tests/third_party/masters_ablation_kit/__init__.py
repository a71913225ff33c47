"""masters-ablation-kit: a third-party masters plugin written from the public docs alone.

It adds one component of six kinds through the public hooks (``masters.api`` only):

* masker ``ablation_columns`` (column units, a ``masters.api.UnitLayout``),
* schedule ``two_level`` (``r_max`` for the first part of training, then 0; no step),
* reward ``first_word`` (an accuracy reward),
* objective ``reward_weighted_kd`` (CONTRIBUTING's example objective),
* task ``color_blocks`` (a tiny synthetic VQA task on generated images),
* adapter ``idefics2`` (a VLM family masters does not ship).

Keep this module import-light: masters imports ``masters_ablation_kit.hooks`` whenever it lists or
validates components.
"""

__version__ = "0.1.0"
