"""What a published family is, pinned in git: the repo list and the sha256 of every file in each repo.

`zoo publish` writes results/hub/FAMILY-ORG.json after its last push; committed with the results, it
is what `zoo reproduce` holds the served repos to. A hash list stored on the server (an index repo)
would prove nothing: whoever can push a changed file can push the changed hash beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo import paths
from zoo.errors import ZooError
from zoo.io import sha256_file, write_json
from zoo.record import fp32_sibling

IGNORED = (".gitattributes",)  # the Hub adds it to every repo; no loader reads it


def default_path(family: str, org: str) -> Path:
    return paths.RESULTS / "hub" / f"{family}-{org}.json"


def repo_files(folder: Path) -> dict[str, str]:
    """sha256 of every file a user can download from the repo folder (README.md included)."""
    return {f.name: sha256_file(f) for f in sorted(Path(folder).iterdir()) if f.is_file() and f.name not in IGNORED}


def pin_repo(name: str, task: str, quant: str, folder: Path) -> dict:
    """One repo's pin; an int8 repo names the fp32 sibling whose weights it must carry byte for byte."""
    return {"name": name, "task": task, "fp32_sibling": fp32_sibling(name, quant), "sha256": repo_files(folder)}


def write(path: Path, family: str, org: str, repos: list[dict]) -> Path:
    return write_json(path, {"family": family, "org": org, "repos": sorted(repos, key=lambda r: r["name"])})


def read(path: Path, family: str, org: str) -> dict:
    """The pinned repos of `family` under `org`; one line naming the file when there are none."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"no pinned repo list at {path}: `zoo publish {family} --org {org}` writes it (commit it with the results), "
                       f"or pass --pins with the file the results came with")
    try:
        pins = json.loads(path.read_text(encoding="utf-8"))
        repos = {r["name"]: r for r in pins["repos"]}
        for repo in repos.values():
            if not (isinstance(repo["sha256"], dict) and repo["sha256"] and isinstance(repo["task"], str) and "fp32_sibling" in repo):
                raise KeyError(f"{repo['name']}: task, fp32_sibling or sha256")
    except (ValueError, KeyError, TypeError) as e:
        raise ZooError(f"{path} is not a pinned repo list (repos with name, task, fp32_sibling, sha256; {type(e).__name__}: {e}); "
                       f"publish again to rewrite it") from e
    if (pins.get("family"), pins.get("org")) != (family, org):
        raise ZooError(f"{path} pins {pins.get('family')} repos of '{pins.get('org')}', not {family} of '{org}'; pass the matching --pins")
    if not repos:
        raise ZooError(f"{path} pins no repos; publish the family's cells first")
    return repos
