"""masters-semantic-reward: the ``semantic_similarity`` accuracy reward for masters.

Keep this module import-light: masters imports ``masters_semantic_reward.hooks`` (and so this
package) every time it lists or validates components; torch and the encoder load only when a run
builds the reward.
"""

__version__ = "0.1.0"
