"""{{plugin_name}}: a masters plugin providing the `{{component}}` component.

Keep this module import-light: masters imports ``{{package}}.hooks`` (and so this package) every
time it lists or validates components.
"""

__version__ = "0.1.0"
