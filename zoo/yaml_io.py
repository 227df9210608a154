"""The one YAML loader for zoo's files (recipes, profiles, matrices): safe, and a key given twice
in one mapping is an error naming the file, the key and both lines, not a silent last-one-wins."""

from __future__ import annotations

from pathlib import Path

import yaml

from zoo.errors import ZooError


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys given here may override those
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ZooError(f"{self.name}: key '{key}' is given twice in one mapping (lines {seen[key] + 1} and "
                               f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path, what: str = "") -> object:
    """The document in `path`; a missing file or broken YAML is one ZooError ("{what} {path} not found")."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ZooError(f"{what + ' ' if what else ''}{path} not found") from e
    except OSError as e:  # a folder, unreadable
        raise ZooError(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror}") from e
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    finally:
        loader.dispose()
