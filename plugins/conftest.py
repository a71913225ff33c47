"""Collection rules for the first-party plugin folders when pytest runs from the repository root.

``template/`` holds ``{{placeholder}}`` files that are not valid Python until ``fill.py`` fills them;
``tests/test_plugins_template.py`` fills, installs and tests it instead. Each plugin package's own
``tests/conftest.py`` sets what it needs, so the packages also test standalone.
"""

collect_ignore = ["template"]
