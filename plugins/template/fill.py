#!/usr/bin/env python3
"""Make a new masters plugin package from this template (standard library only).

    python plugins/template/fill.py masters-my-reward ../masters-my-reward [--component my_reward]

Copies the template, replacing in file names and contents:

* ``{{plugin_name}}``  the distribution name (``masters-my-reward``), as on PyPI
* ``{{package}}``      the import package (``masters_my_reward``)
* ``{{component}}``    the component's registry name, also its entry-point name (``my_reward``)
* ``{{class_prefix}}`` the CamelCase prefix of its classes (``MyReward``)

and fails if any ``{{...}}`` placeholder is left over.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent
SKIP = {"fill.py", "__pycache__", ".pytest_cache", "build", "dist"}
PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_]\w*\s*\}\}")
TEMPLATE_ONLY = re.compile(r"<!-- template-only.*?<!-- /template-only -->\n?", re.DOTALL)
DIST_NAME = re.compile(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$")
COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def placeholders(plugin_name: str, package: str | None = None, component: str | None = None) -> dict[str, str]:
    """The values of every placeholder, derived from the distribution name where not given."""
    if not DIST_NAME.match(plugin_name):
        raise ValueError(f"distribution name {plugin_name!r}: use lowercase letters, digits and '-', e.g. masters-my-reward")
    package = package or re.sub(r"[-.]", "_", plugin_name)
    if not package.isidentifier():
        raise ValueError(f"package name {package!r} is not a Python identifier")
    component = component or re.sub(r"^masters_", "", package)
    if not COMPONENT_NAME.match(component):
        raise ValueError(f"component name {component!r}: use lowercase letters, digits and '_', e.g. my_reward")
    class_prefix = "".join(part.capitalize() for part in component.split("_") if part)
    return {"plugin_name": plugin_name, "package": package, "component": component, "class_prefix": class_prefix}


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = re.sub(r"\{\{\s*" + key + r"\s*\}\}", value, text)
    return text


def fill(dest: Path, values: dict[str, str]) -> list[Path]:
    """Write the filled template under ``dest`` (which must not exist or be empty)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty: choose a new folder")
    written = []
    for source in sorted(TEMPLATE.rglob("*")):
        relative = source.relative_to(TEMPLATE)
        if source.is_dir() or SKIP & set(relative.parts) or source.suffix == ".pyc" or ".egg-info" in str(relative):
            continue
        target = dest / render(str(relative), values)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = render(TEMPLATE_ONLY.sub("", source.read_text(encoding="utf-8")), values)
        left = PLACEHOLDER.findall(text) or PLACEHOLDER.findall(str(target.relative_to(dest)))
        if left:
            raise ValueError(f"{relative}: unknown placeholder(s) {sorted(set(left))}")
        target.write_text(text, encoding="utf-8")
        shutil.copymode(source, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugin_name", help="distribution name, e.g. masters-my-reward")
    parser.add_argument("dest", type=Path, help="folder to create")
    parser.add_argument("--package", help="import package name (default: from the distribution name)")
    parser.add_argument("--component", help="component and entry-point name (default: package without 'masters_')")
    args = parser.parse_args(argv)
    try:
        values = placeholders(args.plugin_name, args.package, args.component)
        written = fill(args.dest, values)
    except (ValueError, FileExistsError) as exc:
        print(f"fill.py: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files under {args.dest} ({values['plugin_name']}: "
          f"package {values['package']}, component {values['component']})")
    print(f"next: cd {args.dest} && pip install -e '.[test]' && pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
